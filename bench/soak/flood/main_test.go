package main

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestGarbage: each kind of datagram is the garbage it says it is.
func TestGarbage(t *testing.T) {
	for _, kind := range garbageKinds {
		for range 20 {
			b := garbage(kind)
			m := new(dns.Msg)
			err := m.Unpack(b)
			switch kind {
			case "random":
				if len(b) < 1 || len(b) > 512 {
					t.Errorf("random: %d bytes", len(b))
				}
			case "short", "label-past-end", "pointer-loop":
				if err == nil {
					t.Errorf("%s: parses: %v", kind, m)
				}
			case "response":
				if err != nil || !m.Response || len(m.Question) != 1 {
					t.Errorf("response: %v %v", m, err)
				}
			case "no-question":
				if err != nil || m.Response || len(m.Question) != 0 {
					t.Errorf("no-question: %v %v", m, err)
				}
			}
			if kind == "short" && len(b) >= 12 {
				t.Errorf("short: %d bytes", len(b))
			}
		}
	}
}

func TestRunOffLoopback(t *testing.T) {
	if _, err := run(context.Background(), options{server: "192.0.2.1:53", from: "127.0.0.1", sources: 1}); err == nil {
		t.Error("a server off loopback: no error")
	}
}

// TestRun floods a small server that closes every other connection at once
// and the rest after 400 ms: the flood sends, counts both closes, stops on
// time and leaves no goroutine behind.
func TestRun(t *testing.T) {
	if c, err := net.ListenPacket("udp", "127.0.66.1:0"); err != nil {
		t.Skipf("loopback addresses other than 127.0.0.1 cannot be bound here: %v", err)
	} else {
		c.Close()
	}
	before := runtime.NumGoroutine()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var got atomic.Int64
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(1)
			if n == 12 { // no-question: answer something
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Skipf("TCP port %d taken: %v", port, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if i%2 == 0 {
				c.Close()
				continue
			}
			wg.Go(func() {
				time.Sleep(400 * time.Millisecond)
				c.Close()
			})
		}
	})

	o := options{server: pc.LocalAddr().String(), from: "127.0.66.1", sources: 3, duration: 1200 * time.Millisecond,
		udpRate: 1000, tcpConns: 6, tcpRate: 100}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	began := time.Now()
	st, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > o.duration+time.Second {
		t.Errorf("ran %v, want about %v", d, o.duration)
	}
	t.Log(st)
	if n := st.udpSent.Load(); n < 900 || n > 1300 {
		t.Errorf("sent %d datagrams in 1.2 s at 1,000 a second", n)
	}
	time.Sleep(50 * time.Millisecond)
	if got.Load() != st.udpSent.Load() {
		t.Errorf("server got %d datagrams, flood sent %d", got.Load(), st.udpSent.Load())
	}
	if st.udpReplies.Load() == 0 {
		t.Error("no reply counted")
	}
	if st.tcpDials.Load() < 10 || st.tcpClosedAtOnce.Load() == 0 || st.tcpClosedLater.Load() == 0 {
		t.Errorf("TCP: %v", st)
	}
	if sum := st.tcpClosedAtOnce.Load() + st.tcpClosedLater.Load() + st.tcpCut.Load(); sum != st.tcpDials.Load() {
		t.Errorf("TCP: %d connections accounted for, %d dialled", sum, st.tcpDials.Load())
	}
	ln.Close()
	pc.Close()
	wg.Wait()
	for range 100 {
		if runtime.NumGoroutine() <= before+1 { // the UDP reader above
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d goroutines after the flood, %d before", runtime.NumGoroutine(), before)
}
