package consumer

import (
	"iter"
	"time"
)

// How a hold asks the broker: every holdAskEvery during its first
// holdAskFast (a broker that has just restarted may not answer yet, and the
// acks it lost are being sent again), then on the consumer's tick; and,
// holdAskSoon after the last ask at the earliest, as soon as the events the
// last answer said were out have arrived.
const (
	holdAskEvery = 200 * time.Millisecond
	holdAskFast  = 5 * time.Second
	holdAskSoon  = 50 * time.Millisecond
)

// hold decides when a consumer holds its first deliveries back, so that no
// event overtakes an older one of its key that is still on its way back:
// after a crash (a dead predecessor's unacknowledged events, which the
// broker redelivers when their ack wait ends) or a reconnect (events that
// were on the wire when the connection dropped). It does no I/O and reads
// no clock: the consumer asks the broker when due says so and reports the
// answer, the deliveries it receives and the events it settles, each with
// the time.
//
// What is out is what the broker counts as delivered and unacknowledged
// beyond the events the consumer holds itself. Those count as its own only
// in (ack floor, delivered sequence] when the broker tells them
// (broker.PendingStater): a broker that restarted and lost the last of its
// consumer state does not count the events it delivered after its last
// state write (it delivers them again as first deliveries, in stream order,
// which is harmless for order). Without those sequences a count taken after
// a reconnect cannot be trusted (the consumer may hold events the broker no
// longer counts, hiding as many that are out): then no answer ends the hold
// before the ack wait is over.
//
// A hold after a reconnect ends only on an answer that counts nothing out.
// Counting arrivals is not enough there: the consumer acknowledges events
// during such a hold (those it had before the reconnect), and a delivery
// the broker sent before it took an ack — or an ack sent again after the
// reconnect — arrives as if it were one of those that were out. So arrivals
// only make it ask again soon: once as many have arrived as the last answer
// counted out (events in flight to the consumer when it asked count too).
// A hold from the start (countEnds: a crashed predecessor's events; the
// consumer acknowledges nothing while it holds everything) also ends once
// that many have arrived.
//
// At the latest a hold ends at 2×ack wait + 1s, for when other live
// instances of the subscription always have events out.
type hold struct {
	ackWait time.Duration
	tick    time.Duration // how often to ask after holdAskFast

	active    bool
	countEnds bool       // enough arrivals end the hold
	counted   bool       // awaiting is the count of an answer
	awaiting  int        // arrivals still to come, per the last answer
	last      holdAnswer // the last answer that counted
	trustAt   time.Time  // answers before then cannot end the hold
	fastUntil time.Time  // until then ask every holdAskEvery, later every tick
	nextAsk   time.Time
	lastAsk   time.Time
	cap       time.Time       // the longest hold
	settled   map[uint64]bool // own events settled since the last answer
}

// holdAnswer is the broker's answer to "what is unacknowledged?".
type holdAnswer struct {
	err     error // the broker did not answer
	pending int   // delivered and unacknowledged
	// seqs: delivered and floor are known. The events the consumer holds
	// count as its own only in (floor, delivered].
	seqs             bool
	delivered, floor uint64
}

// begin starts (or starts again) a hold at now. trusted says whether the
// broker's answers can end it before the ack wait is over; countEnds
// whether enough arrivals can.
func (h *hold) begin(now time.Time, trusted, countEnds bool) {
	h.active, h.countEnds, h.counted, h.awaiting = true, countEnds, false, 0
	h.last = holdAnswer{}
	h.trustAt = time.Time{}
	if !trusted {
		h.trustAt = now.Add(h.ackWait + time.Second)
	}
	h.fastUntil = now.Add(holdAskFast)
	h.nextAsk, h.lastAsk = now, time.Time{}
	h.cap = now.Add(2*h.ackWait + time.Second)
	h.settled = map[uint64]bool{}
}

// end ends the hold.
func (h *hold) end() {
	h.active, h.counted, h.awaiting = false, false, 0
	h.nextAsk = time.Time{}
	h.settled = nil
}

// due reports whether the broker should be asked at now.
func (h *hold) due(now time.Time) bool {
	return h.active && !h.nextAsk.IsZero() && !now.Before(h.nextAsk)
}

// wake is when the consumer must look at the hold next: the next ask or
// the cap, whichever is first (zero when there is no hold).
func (h *hold) wake() time.Time {
	if !h.active {
		return time.Time{}
	}
	if !h.nextAsk.IsZero() && h.nextAsk.Before(h.cap) {
		return h.nextAsk
	}
	return h.cap
}

func (h *hold) scheduleAsk(now time.Time) {
	if now.Before(h.fastUntil) {
		h.nextAsk = now.Add(holdAskEvery)
	} else {
		h.nextAsk = now.Add(h.tick)
	}
}

// answer takes the broker's answer given at now, with the stream sequences
// of the events the consumer holds (queued, not yet settled), and reports
// whether the hold ended.
func (h *hold) answer(now time.Time, a holdAnswer, held iter.Seq[uint64]) bool {
	if !h.active {
		return false
	}
	h.lastAsk = now
	if a.err != nil {
		h.scheduleAsk(now)
		return false
	}
	if now.Before(h.trustAt) {
		h.nextAsk = h.trustAt
		return false
	}
	own := 0
	for s := range held {
		if !a.seqs || s > a.floor && s <= a.delivered {
			own++
		}
	}
	out := a.pending - own
	if out <= 0 {
		h.end()
		return true
	}
	h.counted, h.awaiting, h.last = true, out, a
	clear(h.settled)
	h.scheduleAsk(now)
	return false
}

// arrived takes, at now, a delivery of stream sequence seq that the
// consumer did not hold (redelivery: NumDelivered > 1), and reports whether
// the hold ended. Only an arrival that the last answer can have counted out
// counts: one in (floor, delivered] of that answer (without sequences: a
// redelivery), of an event not settled since.
func (h *hold) arrived(now time.Time, seq uint64, redelivery bool) bool {
	if !h.active || !h.counted || h.awaiting <= 0 || h.settled[seq] {
		return false
	}
	if h.last.seqs && (seq <= h.last.floor || seq > h.last.delivered) || !h.last.seqs && !redelivery {
		return false
	}
	h.awaiting--
	if h.awaiting > 0 {
		return false
	}
	if h.countEnds {
		h.end()
		return true
	}
	soon := h.lastAsk.Add(holdAskSoon)
	if soon.Before(now) {
		soon = now
	}
	if soon.Before(h.nextAsk) {
		h.nextAsk = soon
	}
	return false
}

// settle takes an event the consumer settled (acknowledged).
func (h *hold) settle(seq uint64) {
	if h.active {
		h.settled[seq] = true
	}
}

// expire reports whether the hold ended at now because it reached its cap.
func (h *hold) expire(now time.Time) bool {
	if h.active && !now.Before(h.cap) {
		h.end()
		return true
	}
	return false
}

// out is how many events the last answer said were out (-1: no count yet).
func (h *hold) out() int {
	if !h.counted {
		return -1
	}
	return h.awaiting
}
