package consumer

import (
	"iter"
	"maps"
	"sort"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// item is one delivery held by a consumer until it is settled.
type item struct {
	seq      uint64 // stream sequence: publish order
	held     bool   // a first delivery held back while a crashed instance's events return
	d        broker.Delivery
	env      *envelope.Envelope    // nil when undecodable
	named    *envelope.DecodeError // when undecodable: the id, type and version it names
	foreign  bool                  // from a producer that is not a herald service (envelope.Read.Foreign)
	val      any
	key      string // ordering key
	reason   string // set when the event must be dead-lettered at once
	lastErr  string
	attempts int
	due      time.Time // not before (retries)
	touched  time.Time // last time the broker heard of it
}

// queue keeps the items a consumer holds: a FIFO per ordering key, in
// stream order, and an index by stream sequence. It does no I/O and reads
// no clock: times are passed in.
type queue struct {
	keys  map[string][]*item // per key, in stream order
	bySeq map[uint64]*item   // every queued item, by stream sequence
	n     int
}

func newQueue() queue {
	return queue{keys: map[string][]*item{}, bySeq: map[uint64]*item{}}
}

// redeliver takes a redelivery of an item the queue still holds (its ack
// wait ran out, say while the connection was down): the item keeps its
// place and takes the live delivery d, heard of at now. It reports false,
// changing nothing, when the queue holds no item of d's sequence (or d has
// none: transports without sequences).
func (q *queue) redeliver(d broker.Delivery, now time.Time) bool {
	seq := d.Sequence()
	if seq == 0 {
		return false
	}
	old, ok := q.bySeq[seq]
	if !ok {
		return false
	}
	old.d, old.touched = d, now
	return true
}

// push queues it at its place in its key's queue: a redelivery goes back
// before newer events of its key.
func (q *queue) push(it *item) {
	q.bySeq[it.seq] = it
	k := append(q.keys[it.key], it)
	for i := len(k) - 1; i > 0 && k[i-1].seq > k[i].seq; i-- {
		k[i-1], k[i] = k[i], k[i-1]
	}
	q.keys[it.key] = k
	q.n++
}

// ready returns, in stream order, the due prefix of every key's queue (at
// most limit items), and when the next item becomes due (zero if none; now
// if items were left out for the limit). Held items and everything behind
// them in their key wait.
func (q *queue) ready(now time.Time, limit int) ([]*item, time.Time) {
	var out []*item
	var next time.Time
	for _, k := range q.keys {
		for _, it := range k {
			if it.held {
				break
			}
			if it.due.After(now) {
				if next.IsZero() || it.due.Before(next) {
					next = it.due
				}
				break
			}
			out = append(out, it)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	if len(out) > limit {
		out = out[:limit]
		next = now
	}
	return out, next
}

// remove drops a settled item from its key's queue.
func (q *queue) remove(it *item) {
	k := q.keys[it.key]
	for i, x := range k {
		if x == it {
			k = append(k[:i], k[i+1:]...)
			break
		}
	}
	if len(k) == 0 {
		delete(q.keys, it.key)
	} else {
		q.keys[it.key] = k
	}
	delete(q.bySeq, it.seq)
	q.n--
}

// unhold lets every held item go and reports how many there were.
func (q *queue) unhold() int {
	n := 0
	for _, it := range q.bySeq {
		if it.held {
			it.held = false
			n++
		}
	}
	return n
}

// items yields every queued item, in no particular order.
func (q *queue) items() iter.Seq[*item] { return maps.Values(q.bySeq) }

// seqs yields the stream sequences of the queued items.
func (q *queue) seqs() iter.Seq[uint64] { return maps.Keys(q.bySeq) }

// len is how many items the queue holds.
func (q *queue) len() int { return q.n }

// reset empties the queue.
func (q *queue) reset() { *q = newQueue() }
