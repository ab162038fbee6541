package history

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/resolver"
)

// benchAnswers are the answers of a busy minute: 16 machines, each asking
// for four catalog names (sinkholed and logged) and a name outside it.
func benchAnswers(b *testing.B) []resolver.Answer {
	var as []resolver.Answer
	at := time.Now()
	for c := range 16 {
		for _, name := range []string{telemetry, logged, "settings-win.data.microsoft.com.", "fe2cr.update.microsoft.com.", unlisted} {
			as = append(as, answer(b, fmt.Sprintf("192.168.1.%d", 10+c), name, at))
		}
	}
	return as
}

// BenchmarkAnswered is what the history adds to the answer path: one call
// of Answered. "load" is the load benchmark's case: the writer flushes
// every 100 ms beside it, and past the event rate only counts are kept.
// "kept" keeps every answer's event too (the batch emptied, untimed, every
// 10,000 answers, as a flush would).
func BenchmarkAnswered(b *testing.B) {
	as := benchAnswers(b)
	b.Run("load", func(b *testing.B) {
		s, err := Open(Config{Path: b.TempDir() + "/h.db", Flush: 100 * time.Millisecond}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			s.Answered(as[i%len(as)])
		}
	})
	b.Run("kept", func(b *testing.B) {
		s, err := Open(Config{Path: b.TempDir() + "/h.db", Flush: time.Hour}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%10_000 == 0 {
				b.StopTimer()
				s.mu.Lock()
				s.cur.reset()
				s.mu.Unlock()
				b.StartTimer()
			}
			s.Answered(as[i%len(as)])
		}
		if d := testutil.ToFloat64(s.m.droppedEvents); d > 0 {
			b.Fatalf("%v events dropped", d)
		}
	})
}

// BenchmarkAnsweredParallel is Answered from every core at once: the
// mutex's cost under contention.
func BenchmarkAnsweredParallel(b *testing.B) {
	as := benchAnswers(b)
	s, err := Open(Config{Path: b.TempDir() + "/h.db", Flush: 100 * time.Millisecond}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Answered(as[i%len(as)])
			i++
		}
	})
}

// BenchmarkFlush writes a flush of N matches, each a new count row (a new
// client and minute) with its event: the worst case of a flush's size.
func BenchmarkFlush(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			as := make([]resolver.Answer, n)
			for i := range as {
				as[i] = answer(b, fmt.Sprintf("10.0.%d.%d", i>>8, i&255), telemetry, t0)
			}
			s, err := Open(Config{Path: b.TempDir() + "/h.db", Flush: time.Hour}, Options{MaintainEvery: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				for j := range as {
					as[j].Start = t0.Add(time.Duration(i) * time.Minute) // a new bucket: every count is an insert
					s.Answered(as[j])
				}
				b.StartTimer()
				if err := s.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/record")
		})
	}
}

// BenchmarkFlushHousehold is the writer's work for the busy household of
// issue 13: a flush of its 5 seconds (the default interval) of matches,
// 58 of them from its 50 machines, each a count, a first and last seen,
// totals and an event. It is what the history costs the machine besides
// Answered, every 5 seconds, once it has run for a while: the flushes of
// two hours come first, untimed, so that most event details are known.
func BenchmarkFlushHousehold(b *testing.B) {
	h := newBenchHousehold(b)
	s, err := Open(Config{Path: b.TempDir() + "/h.db", Flush: time.Hour}, Options{MaintainEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	per := benchMachines * benchPerDay / (24 * 3600 / 5)
	at := t0
	fill := func() {
		for range per {
			a, _ := h.answer(rng, rng.IntN(benchMachines), at)
			a.Start = at.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
			s.Answered(a)
		}
		at = at.Add(5 * time.Second)
	}
	for range 2 * 3600 / 5 {
		fill()
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		fill()
		b.StartTimer()
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/flush")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*per), "µs/match")
}
