package history

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Events are stored packed, a block of them to a row of event_blocks, so
// that a week of a busy household's matches (7 million) takes under 8
// bytes each, details and index included, instead of the 197 a row of
// text and its two indexes took (BenchmarkHouseholdSize). What the events
// of a household repeat (client, group, name, type, action, category,
// pattern, windows, family, CNAME, edition, rcode, source) is a row of
// event_details, named in the block by its id; an event is its time, its
// detail and its duration.
//
// A block holds at most blockEvents events, in time order, spanning at
// most blockSpan: the writer cuts a flush's events into blocks, a new one
// at either bound. The readers rely on the span: a block that starts at
// first_ms holds no event after first_ms + blockSpan, so that, reading
// blocks by first_ms, they know when no later block can hold an event
// they would return first.
//
// An event's id is its block's id times blockEvents plus its place in
// the block: unique, and, among events of the same millisecond, in the
// order they were written.
//
// The data of a block is a format byte (blockFormat) and then, for each
// event, three unsigned varints: the milliseconds since the event before
// (since first_ms for the first), the detail's id, and the duration in
// microseconds.
const (
	blockEvents = 256
	blockSpan   = 60_000 // milliseconds
	blockFormat = 1
)

// packedEvent is an event as a block holds it.
type packedEvent struct {
	ms     int64 // Unix milliseconds
	detail int64 // event_details.id
	us     int64 // duration in microseconds
}

// micros is a duration in whole microseconds, rounded.
func micros(d time.Duration) int64 { return max(0, int64((d+500*time.Nanosecond)/time.Microsecond)) }

// block is a run of events to store as one row.
type block struct {
	first, last int64
	data        []byte
	n           int
}

// packBlocks sorts events by time (keeping the order of events of the same
// millisecond) and cuts them into blocks.
func packBlocks(events []packedEvent) []block {
	slices.SortStableFunc(events, func(x, y packedEvent) int { return cmp.Compare(x.ms, y.ms) })
	var out []block
	for i := 0; i < len(events); {
		first := events[i].ms
		j := i
		for j < len(events) && j-i < blockEvents && events[j].ms-first <= blockSpan {
			j++
		}
		b := block{first: first, last: events[j-1].ms, n: j - i, data: make([]byte, 1, 1+(j-i)*6)}
		b.data[0] = blockFormat
		prev := first
		for _, e := range events[i:j] {
			b.data = binary.AppendUvarint(b.data, uint64(e.ms-prev))
			b.data = binary.AppendUvarint(b.data, uint64(e.detail))
			b.data = binary.AppendUvarint(b.data, uint64(e.us))
			prev = e.ms
		}
		out = append(out, b)
		i = j
	}
	return out
}

var errBlock = errors.New("history: a block of events cannot be read")

// eachPacked calls fn for each event of the block id that starts at
// first, with the event's id, in time order.
func eachPacked(id, first int64, data []byte, fn func(eventID int64, e packedEvent) error) error {
	if len(data) == 0 || data[0] != blockFormat {
		return fmt.Errorf("%w: block %d has format %v", errBlock, id, data[:min(1, len(data))])
	}
	ms := first
	for i, p := int64(0), 1; p < len(data); i++ {
		var v [3]uint64
		for k := range v {
			x, n := binary.Uvarint(data[p:])
			if n <= 0 {
				return fmt.Errorf("%w: block %d is cut short", errBlock, id)
			}
			v[k], p = x, p+n
		}
		ms += int64(v[0])
		if err := fn(id*blockEvents+i, packedEvent{ms: ms, detail: int64(v[1]), us: int64(v[2])}); err != nil {
			return err
		}
	}
	return nil
}
