package consumer

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// The hold's decisions, on a clock of its own: each step happens at t0+at.

type holdStep struct {
	at time.Duration
	// one of:
	answer     *holdAnswer // with held, the consumer's queued sequences
	held       []uint64
	arrived    uint64 // a delivery of this sequence arrives (a new item)
	redelivery bool   // it is a redelivery
	settle     uint64 // the consumer settles this sequence
	expire     bool   // the consumer looks at the cap
	// then:
	ended   bool // the step ends the hold
	active  bool // the hold is on after the step
	nextAsk time.Duration
	out     int // hold.out() after the step (-1: no count)
}

func TestHoldDecisions(t *testing.T) {
	const ackWait = 10 * time.Second
	const tick = time.Second
	errDown := errors.New("nats: no responders available for request")
	state := func(pending int, floor, delivered uint64) *holdAnswer {
		return &holdAnswer{pending: pending, seqs: true, floor: floor, delivered: delivered}
	}
	for _, tc := range []struct {
		name      string
		trusted   bool
		countEnds bool // a hold from the start (crash) rather than after a reconnect
		steps     []holdStep
	}{
		{
			name:    "reconnect, nothing out: the broker counts only the held events, no hold",
			trusted: true,
			steps: []holdStep{
				{answer: state(3, 90, 100), held: []uint64{95, 96, 97}, ended: true, out: -1},
			},
		},
		{
			name:    "reconnect, events out: hold until they are back and the broker counts none out",
			trusted: true,
			steps: []holdStep{
				{answer: state(4, 90, 100), held: []uint64{95, 96}, active: true, nextAsk: holdAskEvery, out: 2},
				{at: 100 * time.Millisecond, arrived: 93, redelivery: true, active: true, nextAsk: holdAskEvery, out: 1},
				// Not among those out: above the answer's delivered sequence
				// (a new event), or settled since (it was held: its own).
				{at: 110 * time.Millisecond, arrived: 101, active: true, nextAsk: holdAskEvery, out: 1},
				{at: 150 * time.Millisecond, settle: 96, active: true, nextAsk: holdAskEvery, out: 1},
				{at: 160 * time.Millisecond, arrived: 96, redelivery: true, active: true, nextAsk: holdAskEvery, out: 1},
				// The last one: ask again at once rather than at the next 200ms.
				{at: 30 * time.Millisecond, arrived: 94, redelivery: true, active: true, nextAsk: holdAskSoon, out: 0},
				{at: holdAskSoon, answer: state(3, 90, 101), held: []uint64{93, 94, 95, 101}, ended: true, out: -1},
			},
		},
		{
			// The broker redelivered events (their ack was lost) before it
			// took the acks sent again after the reconnect: they arrive
			// although the answer did not count them out. Only the next
			// answer can tell that one event is still out.
			name:    "reconnect, arrivals the answer did not count: the next answer decides",
			trusted: true,
			steps: []holdStep{
				{answer: state(3, 50, 100), active: true, nextAsk: holdAskEvery, out: 3},
				{at: 10 * time.Millisecond, arrived: 60, redelivery: true, active: true, nextAsk: holdAskEvery, out: 2},
				{at: 10 * time.Millisecond, arrived: 61, redelivery: true, active: true, nextAsk: holdAskEvery, out: 1},
				{at: 10 * time.Millisecond, arrived: 62, redelivery: true, active: true, nextAsk: holdAskSoon, out: 0},
				{at: holdAskSoon, answer: state(4, 50, 100), held: []uint64{60, 61, 62}, active: true, nextAsk: holdAskSoon + holdAskEvery, out: 1},
				// (the asks every 200ms in between found it out still)
				{at: ackWait, arrived: 55, redelivery: true, active: true, nextAsk: holdAskSoon + holdAskEvery, out: 0},
				{at: ackWait, answer: state(4, 50, 100), held: []uint64{55, 60, 61, 62}, ended: true, out: -1},
			},
		},
		{
			name:    "reconnect, events out: a later answer ends the hold once the broker counts none out",
			trusted: true,
			steps: []holdStep{
				{answer: state(6, 90, 100), held: []uint64{95, 96}, active: true, nextAsk: holdAskEvery, out: 4},
				// still out: 2 came back (held now), 2 not
				{at: holdAskEvery, answer: state(6, 90, 120), held: []uint64{91, 92, 95, 96}, active: true, nextAsk: 2 * holdAskEvery, out: 2},
				// the other two were acknowledged elsewhere (another instance had them)
				{at: 2 * holdAskEvery, answer: state(5, 90, 120), held: []uint64{91, 92, 95, 96, 110}, ended: true, out: -1},
			},
		},
		{
			name:    "broker does not answer: ask every 200ms for 5s, then on the tick; the cap ends the hold",
			trusted: true,
			steps: []holdStep{
				{answer: &holdAnswer{err: errDown}, active: true, nextAsk: holdAskEvery, out: -1},
				{at: holdAskEvery, answer: &holdAnswer{err: errDown}, active: true, nextAsk: 2 * holdAskEvery, out: -1},
				// no count yet: an arrival changes nothing
				{at: 300 * time.Millisecond, arrived: 50, redelivery: true, active: true, nextAsk: 2 * holdAskEvery, out: -1},
				{at: holdAskFast, answer: &holdAnswer{err: errDown}, active: true, nextAsk: holdAskFast + tick, out: -1},
				{at: 2*ackWait + time.Second - time.Millisecond, expire: true, active: true, nextAsk: holdAskFast + tick, out: -1},
				{at: 2*ackWait + time.Second, expire: true, ended: true, out: -1},
			},
		},
		{
			name:    "broker answers late: its first answer decides",
			trusted: true,
			steps: []holdStep{
				{answer: &holdAnswer{err: errDown}, active: true, nextAsk: holdAskEvery, out: -1},
				{at: 3 * time.Second, answer: state(2, 40, 100), held: []uint64{50, 60}, ended: true, out: -1},
			},
		},
		{
			// A restarted broker restored its consumer state from before it
			// delivered 101..103 (the consumer holds them) and counts 2
			// pending: the held 95 and 90, which was lost on the wire and
			// comes back only after its ack wait. 2 <= 4 held events, but
			// only one of them (95) is at or below its delivered sequence.
			name:    "undercount: held events above the broker's delivered sequence are not its pending ones",
			trusted: true,
			steps: []holdStep{
				{answer: state(2, 80, 100), held: []uint64{95, 101, 102, 103}, active: true, nextAsk: holdAskEvery, out: 1},
				// 101..103 come again as first deliveries (the same items); 104 is new.
				{at: holdAskEvery, answer: state(6, 80, 104), held: []uint64{95, 101, 102, 103, 104}, active: true, nextAsk: 2 * holdAskEvery, out: 1},
				{at: 300 * time.Millisecond, arrived: 105, active: true, nextAsk: 2 * holdAskEvery, out: 1},
				{at: 2 * holdAskEvery, answer: state(7, 80, 105), held: []uint64{95, 101, 102, 103, 104, 105}, active: true, nextAsk: 3 * holdAskEvery, out: 1},
				{at: 500 * time.Millisecond, arrived: 90, redelivery: true, active: true, nextAsk: 500 * time.Millisecond, out: 0},
				{at: 500 * time.Millisecond, answer: state(7, 80, 105), held: []uint64{90, 95, 101, 102, 103, 104, 105}, ended: true, out: -1},
			},
		},
		{
			name:    "undercount: rolled back, nothing out",
			trusted: true,
			steps: []holdStep{
				{answer: state(1, 80, 100), held: []uint64{95, 101, 102, 103}, ended: true, out: -1},
			},
		},
		{
			name:      "crash: a dead predecessor's events still on their way back",
			trusted:   true,
			countEnds: true,
			steps: []holdStep{
				{answer: state(3, 10, 20), active: true, nextAsk: holdAskEvery, out: 3},
				{at: holdAskEvery, answer: state(3, 10, 20), active: true, nextAsk: 2 * holdAskEvery, out: 3},
				{at: 300 * time.Millisecond, arrived: 21, active: true, nextAsk: 2 * holdAskEvery, out: 3}, // a new event
				{at: ackWait, arrived: 12, redelivery: true, active: true, nextAsk: 2 * holdAskEvery, out: 2},
				// Asked before the last redeliveries arrived: 1 held, 2 out.
				{at: ackWait + 10*time.Millisecond, answer: state(5, 10, 30), held: []uint64{12, 21, 22}, active: true, nextAsk: ackWait + 10*time.Millisecond + tick, out: 2},
				{at: ackWait + 20*time.Millisecond, arrived: 15, redelivery: true, active: true, nextAsk: ackWait + 10*time.Millisecond + tick, out: 1},
				{at: ackWait + 30*time.Millisecond, arrived: 18, redelivery: true, ended: true, out: -1},
			},
		},
		{
			// Without waiting for the ack wait: the predecessor was alive
			// after all and acknowledged its events itself.
			name:      "crash: the broker's count ends the hold before the ack wait",
			trusted:   true,
			countEnds: true,
			steps: []holdStep{
				{answer: state(3, 10, 20), active: true, nextAsk: holdAskEvery, out: 3},
				{at: holdAskEvery, answer: state(2, 10, 22), held: []uint64{21, 22}, ended: true, out: -1},
			},
		},
		{
			// The answer counted two first deliveries on their way to the
			// consumer (at or below its delivered sequence); a redelivery
			// above that sequence was not among those out.
			name:      "crash: first deliveries in flight when the consumer asked",
			trusted:   true,
			countEnds: true,
			steps: []holdStep{
				{answer: state(4, 10, 24), held: []uint64{21, 22}, active: true, nextAsk: holdAskEvery, out: 2},
				{at: 10 * time.Millisecond, arrived: 23, active: true, nextAsk: holdAskEvery, out: 1},
				{at: 10 * time.Millisecond, arrived: 30, redelivery: true, active: true, nextAsk: holdAskEvery, out: 1},
				{at: 10 * time.Millisecond, arrived: 24, ended: true, out: -1},
			},
		},
		{
			name:      "crash: with other live instances some are always out; the cap ends the hold",
			trusted:   true,
			countEnds: true,
			steps: []holdStep{
				{answer: state(10, 10, 30), active: true, nextAsk: holdAskEvery, out: 10},
				{at: 2*ackWait + time.Second, expire: true, ended: true, out: -1},
			},
		},
		{
			// A transport that counts but does not tell its delivered
			// sequence (broker.PendingCounter only), after a reconnect.
			name:    "untrusted count: no answer ends the hold before the ack wait is over",
			trusted: false,
			steps: []holdStep{
				{answer: &holdAnswer{pending: 0}, active: true, nextAsk: ackWait + time.Second, out: -1},
				{at: 500 * time.Millisecond, arrived: 7, redelivery: true, active: true, nextAsk: ackWait + time.Second, out: -1},
				{at: ackWait + time.Second, answer: &holdAnswer{pending: 3}, held: []uint64{7, 8}, active: true, nextAsk: ackWait + time.Second + tick, out: 1},
				// without sequences only redeliveries count
				{at: ackWait + 1100*time.Millisecond, arrived: 9, active: true, nextAsk: ackWait + time.Second + tick, out: 1},
				{at: ackWait + 1200*time.Millisecond, arrived: 6, redelivery: true, active: true, nextAsk: ackWait + 1200*time.Millisecond, out: 0},
				{at: ackWait + 1200*time.Millisecond, answer: &holdAnswer{pending: 4}, held: []uint64{6, 7, 8, 9}, ended: true, out: -1},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
			h := hold{ackWait: ackWait, tick: tick}
			h.begin(t0, tc.trusted, tc.countEnds)
			if !h.active || !h.due(t0) {
				t.Fatalf("begin: active %v, due %v; want a hold that asks at once", h.active, h.due(t0))
			}
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				var ended bool
				switch {
				case st.answer != nil:
					ended = h.answer(now, *st.answer, slices.Values(st.held))
				case st.arrived != 0:
					ended = h.arrived(now, st.arrived, st.redelivery)
				case st.settle != 0:
					h.settle(st.settle)
				case st.expire:
					ended = h.expire(now)
				}
				if ended != st.ended || h.active != st.active || h.out() != st.out {
					t.Fatalf("step %d (at %v): ended %v, active %v, out %d; want %v, %v, %d", i, st.at, ended, h.active, h.out(), st.ended, st.active, st.out)
				}
				if !h.active {
					if !h.wake().IsZero() || h.due(now.Add(time.Hour)) {
						t.Fatalf("step %d: an ended hold still wakes at %v", i, h.wake())
					}
					continue
				}
				if got := h.nextAsk.Sub(t0); got != st.nextAsk {
					t.Fatalf("step %d (at %v): next ask at %v, want %v", i, st.at, got, st.nextAsk)
				}
				if h.due(t0.Add(st.nextAsk-time.Nanosecond)) || !h.due(t0.Add(st.nextAsk)) {
					t.Fatalf("step %d: due does not turn at the next ask %v", i, st.nextAsk)
				}
				want := h.nextAsk
				if h.cap.Before(want) {
					want = h.cap
				}
				if w := h.wake(); !w.Equal(want) {
					t.Fatalf("step %d: wake %v, want the earlier of the next ask %v and the cap %v", i, w, h.nextAsk, h.cap)
				}
			}
		})
	}
}

// After a second reconnect during a hold, the hold starts over: a fresh
// count, the fast asks again.
func TestHoldBeginAgain(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	h := hold{ackWait: 2 * time.Second, tick: 500 * time.Millisecond}
	h.begin(t0, true, false)
	h.answer(t0, holdAnswer{pending: 5, seqs: true, floor: 0, delivered: 10}, slices.Values([]uint64{1}))
	if h.out() != 4 {
		t.Fatalf("out %d, want 4", h.out())
	}
	h.settle(1)
	t1 := t0.Add(time.Second)
	h.begin(t1, true, false)
	if h.out() != -1 || !h.due(t1) || h.cap != t1.Add(5*time.Second) || len(h.settled) != 0 {
		t.Fatalf("begun again: out %d, due %v, cap %v, settled %v", h.out(), h.due(t1), h.cap.Sub(t1), h.settled)
	}
}
