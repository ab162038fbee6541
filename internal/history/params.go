package history

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParamError is a query parameter a Reader cannot take: Param names it
// (as the API and the command line spell it) and Msg says what is wanted.
// The web API answers it with 400.
type ParamError struct {
	Param, Msg string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Msg }

func paramError(param, format string, args ...any) *ParamError {
	return &ParamError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// TimeSyntax says how a time is written, for error messages and help.
const TimeSyntax = "want an RFC 3339 time (2026-11-27T12:00:00Z), now, or a time ago: 30m, 24h, 7d, 2w (a leading - is allowed: -24h)"

// ParseTime reads a time as the API and the command line take it: an RFC
// 3339 time, "now", or a duration ago as the config file writes durations
// ("24h", "7d", "2w", "90m"), with or without a leading "-".
func ParseTime(s string, now time.Time) (time.Time, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "now") {
		return now, nil
	}
	if v, err := time.Parse(time.RFC3339Nano, t); err == nil {
		return v, nil
	}
	if d, err := ParseDuration(strings.TrimPrefix(t, "-")); err == nil && t != "" {
		return now.Add(-time.Duration(d)), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: %s", s, TimeSyntax)
}

// Step bounds: a bucket is at least a minute, the finest counts kept.
const (
	MinStep = time.Minute
	MaxStep = 366 * 24 * time.Hour
)

// StepSyntax says how a step is written.
const StepSyntax = "want whole minutes under an hour (1m, 5m, 15m) or whole hours (1h, 6h, 1d, 1w)"

// ParseStep reads the step of a time series: whole minutes under an
// hour, or whole hours, so that no hour of counts rolled up falls in two
// buckets.
func ParseStep(s string) (time.Duration, error) {
	d, err := ParseDuration(s)
	step := time.Duration(d)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a step: %s", s, StepSyntax)
	case step < MinStep || step > MaxStep:
		return 0, fmt.Errorf("%q is out of bounds: want 1m to 366d", s)
	case step < time.Hour && step%time.Minute != 0, step > time.Hour && step%time.Hour != 0:
		return 0, fmt.Errorf("%q is not a step: %s", s, StepSyntax)
	}
	return step, nil
}

// FormatStep spells a step as ParseStep reads it: "5m", "3h", "1d".
func FormatStep(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// autoPoints is about how many buckets AutoStep aims for: enough for a
// plot a page wide.
const autoPoints = 300

var autoSteps = []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 28 * 24 * time.Hour}

// AutoStep is the step of a time series from from to to when none is
// asked for: the finest of 1m, 2m, 5m, 10m, 15m, 30m, 1h, 2h, 3h, 6h, 12h,
// 1d, 7d and 28d that makes at most about 300 buckets, and an hour or more
// when from is older than the minutes kept (RollupAfter before now).
func AutoStep(from, to, now time.Time) time.Duration {
	for _, s := range autoSteps {
		if s < time.Hour && from.Before(now.Add(-RollupAfter)) {
			continue
		}
		if points(from, to, s) <= autoPoints {
			return s
		}
	}
	return autoSteps[len(autoSteps)-1]
}

// align gives the buckets of step that cover [from, to): their start, and
// how many. Buckets start at multiples of step since the Unix epoch, so
// that a day is a UTC day.
func align(from, to time.Time, step time.Duration) (start time.Time, n int64) {
	s := int64(step / time.Second)
	a := from.Unix()
	a -= mod(a, s)
	b := to.Unix()
	if to.After(time.Unix(b, 0)) {
		b++ // a fraction of a second into the next bucket
	}
	if m := mod(b, s); m != 0 {
		b += s - m
	}
	return time.Unix(a, 0).UTC(), (b - a) / s
}

func points(from, to time.Time, step time.Duration) int64 {
	_, n := align(from, to, step)
	return n
}

// mod is a % b for a Euclidean b > 0: never negative.
func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// Limits of the pages a query returns.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	MaxOffset    = 1_000_000
)

// page checks a limit and an offset and applies the default limit.
func page(limit, offset int) (int, error) {
	switch {
	case limit < 0 || limit > MaxLimit:
		return 0, paramError("limit", "%d is out of bounds: want 1 to %d (default %d)", limit, MaxLimit, DefaultLimit)
	case offset < 0 || offset > MaxOffset:
		return 0, paramError("offset", "%d is out of bounds: want 0 to %d", offset, MaxOffset)
	case limit == 0:
		return DefaultLimit, nil
	}
	return limit, nil
}

// checkRange checks that from is before to.
func checkRange(from, to time.Time) error {
	if !from.Before(to) {
		return paramError("from", "%s is not before to (%s): want from earlier than to", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	return nil
}
