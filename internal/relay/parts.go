package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/backoff"
	"github.com/heraldhq/herald/store"
)

// On a broker that partitions its events (broker.Partitioner, more than one
// partition), order holds per partition only, so a partition that cannot
// take events for a while (its stream electing a leader) holds back only
// its own later rows. The relay then publishes each partition's rows in a
// Publish call of their own, at most one call in flight per partition, and
// keeps what a partition has not had acknowledged in a queue of its own, in
// order: the rows read while its call is out wait behind it; after a
// failure the queue is sent again, from its first unacknowledged row,
// after the partition's own backoff, while the other partitions go on. A
// round waits for the calls it started, except retries, for at most
// partitionGrace: a call still out then goes on by itself, and a later
// round (woken when it returns) takes its outcome.
//
// Marks stay exact across a crash. The range mark goes only up to the
// floor, the row before the oldest row any queue holds: every row up to it
// was acknowledged or parked. A row acknowledged above the floor is marked
// on its own (OutboxMarkPublished), with the next range mark. A restart
// reads from the range mark, and so sends a lagging partition's rows again,
// and skips the rows marked on their own. On PostgreSQL (serial mode) the
// relay marks every acknowledged row before its next read, as with one
// partition, and leaves the queued rows out of what it reads.

// partitionGrace is how long a round waits for the Publish calls it
// started.
const partitionGrace = 500 * time.Millisecond

// maxQueued bounds the rows the partitions' queues hold: while they hold as
// many, the relay reads nothing more and only sends the queues. In serial
// mode every read reads the queued rows again, so the bound is lower there.
func (r *Relay) maxQueued() int {
	if r.serial {
		return 4 * r.cfg.BatchSize
	}
	return maxUnmarked
}

// part is one partition's state.
type part struct {
	// queue holds the partition's rows read and not acknowledged yet, in
	// the order they go out; the first sent of them are in the call out.
	queue    []store.OutboxRow
	sent     int
	failures int       // failed calls in a row, for the backoff
	retryAt  time.Time // no call before
	fail     failCount
}

// parts is the relay's state of the partitions.
type parts struct {
	of     broker.Partitioner
	p      []part
	done   chan partResult // the calls' outcomes; room for one per partition
	out    int             // calls out
	queued int             // rows in the queues
	gen    uint64          // the current round
}

// partResult is the outcome of one partition's Publish call.
type partResult struct {
	p      int
	gen    uint64
	rows   []store.OutboxRow
	events []*envelope.Envelope
	errs   []error
	start  time.Time
	d      time.Duration
}

// newParts returns the state of pr's partitions, or nil when it has one.
func newParts(b Broker) *parts {
	pr, ok := b.(broker.Partitioner)
	if !ok {
		return nil
	}
	n := pr.Partitions()
	if n <= 1 {
		return nil
	}
	return &parts{of: pr, p: make([]part, n), done: make(chan partResult, n)}
}

// behind reports whether rows wait in a queue or a call is out.
func (ps *parts) behind() bool { return ps != nil && (ps.queued > 0 || ps.out > 0) }

// floor is the highest seq up to which every row read was acknowledged or
// parked: the row before the oldest queued one, or cursor.
func (ps *parts) floor(cursor int64) int64 {
	f := cursor
	for i := range ps.p {
		if q := ps.p[i].queue; len(q) > 0 && q[0].Seq-1 < f {
			f = q[0].Seq - 1
		}
	}
	return f
}

// nextSend is how long until a queue may be sent (0: now); ok is false
// when no queue waits without a call out.
func (ps *parts) nextSend() (d time.Duration, ok bool) {
	if ps == nil {
		return 0, false
	}
	now := time.Now()
	for i := range ps.p {
		pt := &ps.p[i]
		if len(pt.queue) == 0 || pt.sent > 0 {
			continue
		}
		w := max(0, pt.retryAt.Sub(now))
		if !ok || w < d {
			d, ok = w, true
		}
	}
	return d, ok
}

// abandon waits for the calls out, forgets their outcomes and empties the
// queues: the next read reads those rows again from the table.
func (ps *parts) abandon() {
	if ps == nil {
		return
	}
	for ; ps.out > 0; ps.out-- {
		<-ps.done
	}
	for i := range ps.p {
		ps.p[i] = part{}
	}
	ps.queued = 0
}

// roundParts is round for a partitioned broker: it takes the outcomes of
// the calls that returned, reads a batch (unless the queues are full) and
// queues its rows by partition, sends every queue that may go, and waits
// for those calls (see partitionGrace). It marks what was acknowledged and
// returns how many rows it read.
func (r *Relay) roundParts(ctx context.Context, rs *state) (int, error) {
	ps := rs.parts
	ps.gen++
	var acked []int64
	var firstErr error
	take := func(res partResult) {
		a, err := r.landed(ctx, rs, res)
		acked = append(acked, a...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for more := true; more; {
		select {
		case res := <-ps.done:
			take(res)
		default:
			more = false
		}
	}
	// In serial mode the read must not find them unmarked.
	if err := r.markParts(ctx, rs, acked); err != nil {
		return 0, errors.Join(firstErr, err)
	}
	marked := len(acked) > 0
	acked = nil
	n := 0
	if ps.queued < r.maxQueued() {
		var err error
		if n, err = r.readQueue(ctx, rs); err != nil {
			return 0, errors.Join(firstErr, err)
		}
	}
	started, err := r.sendParts(ctx, rs)
	if err != nil && firstErr == nil {
		firstErr = err
	}
	if started > 0 {
		grace := time.NewTimer(partitionGrace)
	wait:
		for started > 0 {
			select {
			case res := <-ps.done:
				if res.gen == ps.gen {
					started--
				}
				take(res)
			case <-grace.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		grace.Stop()
	}
	if err := r.markParts(ctx, rs, acked); err != nil {
		return 0, errors.Join(firstErr, err)
	}
	if !marked && len(acked) == 0 {
		var err error
		if rs.markDue() {
			err = r.flushMarks(ctx, rs)
		} else {
			err = rs.settleDone()
		}
		if err != nil {
			return 0, errors.Join(firstErr, err)
		}
	}
	return n, firstErr
}

// readQueue reads the next batch as round does and queues its rows by
// partition, but those it parks and, in serial mode, those queued already.
// It returns how many rows it read.
func (r *Relay) readQueue(ctx context.Context, rs *state) (int, error) {
	ps := rs.parts
	limit := r.cfg.BatchSize
	if rs.serial {
		limit += ps.queued // the read returns the queued rows again
	}
	read, err := r.next(ctx, rs, limit)
	if err != nil {
		return 0, err
	}
	rows := read
	if rs.serial && ps.queued > 0 && len(rows) > 0 {
		queued := make(map[int64]bool, ps.queued)
		for i := range ps.p {
			for _, row := range ps.p[i].queue {
				queued[row.Seq] = true
			}
		}
		fresh := rows[:0:0]
		for _, row := range rows {
			if !queued[row.Seq] {
				fresh = append(fresh, row)
			}
		}
		rows = fresh
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if len(read) == r.cfg.BatchSize && !rs.serial {
		r.readAhead(ctx, rs, rows[len(rows)-1].Seq) // more is likely waiting
	}
	pub, err := r.parkHeld(ctx, rs, rows)
	if err != nil {
		return 0, err
	}
	at := make([]int, len(pub))
	for i, row := range pub {
		if at[i] = ps.of.Partition(row.Event.Key); at[i] < 0 || at[i] >= len(ps.p) {
			return 0, fmt.Errorf("relay: the broker puts key %q in partition %d of %d", row.Event.Key, at[i], len(ps.p))
		}
	}
	for i, row := range pub {
		ps.p[at[i]].queue = append(ps.p[at[i]].queue, row)
	}
	ps.queued += len(pub)
	if !rs.serial {
		rs.cursor = rows[len(rows)-1].Seq // every row up to it is queued, acknowledged or parked
	}
	return len(rows), nil
}

// sendParts starts a Publish call of the head of every queue that has no
// call out and whose backoff ran out, and returns how many of them are not
// retries (the round waits for those, see partitionGrace). The
// rows of keys held behind a parked row (a refusal in the queue's partition
// holds its key) are parked first.
func (r *Relay) sendParts(ctx context.Context, rs *state) (int, error) {
	ps := rs.parts
	now := time.Now()
	started := 0
	for i := range ps.p {
		pt := &ps.p[i]
		if len(pt.queue) == 0 || pt.sent > 0 || now.Before(pt.retryAt) {
			continue
		}
		if len(rs.held) > 0 {
			pub, err := r.parkHeld(ctx, rs, pt.queue)
			if err != nil {
				return started, err
			}
			ps.queued -= len(pt.queue) - len(pub)
			if pt.queue = pub; len(pub) == 0 {
				pt.queue = nil
				continue
			}
		}
		rows := pt.queue[:min(len(pt.queue), r.cfg.BatchSize)]
		events := make([]*envelope.Envelope, len(rows))
		for j, row := range rows {
			events[j] = row.Event
		}
		pt.sent = len(rows)
		ps.out++
		gen := ps.gen
		if pt.failures == 0 {
			started++
		} else {
			gen = 0 // a retry: the round does not wait for it
		}
		res := partResult{p: i, gen: gen, rows: rows, events: events}
		go func() {
			res.start = time.Now()
			res.errs = r.cfg.Broker.Publish(ctx, res.events)
			res.d = time.Since(res.start)
			ps.done <- res // never blocks: one call out per partition
			r.Wake()       // a relay waiting for a commit takes the outcome
		}()
	}
	return started, nil
}

// landed takes the outcome of a partition's call: the acknowledged prefix
// leaves the queue (its seqs are returned, to mark); at a failure the rest
// stays queued and goes again after the partition's backoff, or at once if
// the failed row was parked (see judge). It returns an error only when no
// retry can succeed (the broker closed) or parking failed.
func (r *Relay) landed(ctx context.Context, rs *state, res partResult) ([]int64, error) {
	ps := rs.parts
	ps.out--
	pt := &ps.p[res.p]
	pt.sent = 0
	if r.cfg.Observer.Observing() {
		r.cfg.Observer.Published(ctx, res.events, res.start, res.d, res.errs)
	}
	ok := 0
	for ok < len(res.rows) && res.errs[ok] == nil {
		ok++
	}
	acked := make([]int64, ok)
	for j, row := range res.rows[:ok] {
		acked[j] = row.Seq
	}
	ps.queued -= ok
	if pt.queue = pt.queue[ok:]; len(pt.queue) == 0 {
		pt.queue = nil
	}
	if ok == len(res.rows) {
		pt.failures, pt.fail.n = 0, 0
		return acked, nil
	}
	row, perr := res.rows[ok], res.errs[ok]
	firstErr := fmt.Errorf("publish %s %s: %w", row.Event.Type, row.Event.ID, perr)
	r.cfg.PublishFailed()
	if ctx.Err() != nil {
		return acked, nil
	}
	if errors.Is(perr, broker.ErrClosed) {
		return acked, firstErr
	}
	parked, err := r.judge(ctx, rs, row, perr, &pt.fail)
	if parked {
		ps.queued--
		if pt.queue = pt.queue[1:]; len(pt.queue) == 0 {
			pt.queue = nil
		}
		pt.failures, pt.retryAt = 0, time.Time{}
		return acked, nil
	}
	pt.failures++
	d := backoff.Delay(pt.failures, 50*time.Millisecond, r.cfg.MaxBackoff)
	pt.retryAt = time.Now().Add(d)
	if err != nil {
		return acked, fmt.Errorf("%w; parking it: %w", firstErr, err)
	}
	r.cfg.Logger.Warn("outbox relay", "partition", res.p, "err", firstErr, "retry_in", d, "queued", len(pt.queue))
	return acked, nil
}

// markParts marks the acknowledged rows: in serial mode now, otherwise
// with the next range mark (those up to the floor) or on their own (those
// above it).
func (r *Relay) markParts(ctx context.Context, rs *state, acked []int64) error {
	if len(acked) == 0 {
		return nil
	}
	if rs.serial {
		return r.cfg.Store.OutboxMarkPublished(ctx, acked, time.Now())
	}
	floor := rs.parts.floor(rs.cursor)
	for _, seq := range acked {
		if seq > floor {
			rs.above = append(rs.above, seq)
		}
	}
	return r.acked(ctx, rs, len(acked))
}

// landParts waits for the calls out, when the relay stops, and marks what
// they had acknowledged (within a second, as flushMarks does).
func (r *Relay) landParts(ctx context.Context, rs *state) {
	ps := rs.parts
	if ps == nil || ps.out == 0 {
		return
	}
	var acked []int64
	for ps.out > 0 {
		a, _ := r.landed(ctx, rs, <-ps.done)
		acked = append(acked, a...)
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = r.markParts(mctx, rs, acked)
}
