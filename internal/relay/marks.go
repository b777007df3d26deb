package relay

import (
	"context"
	"time"

	"github.com/heraldhq/herald/store"
)

// state is what the relay carries from one round to the next.
//
// The cursor, the read ahead and the mark that overlaps the next batch rely
// on rows becoming readable in seq order, which holds on SQLite (one writer
// at a time takes its seqs and commits before the next). On PostgreSQL a
// transaction can take a lower seq and become readable after a higher one
// was published, so there (serial) every round waits for its mark and reads
// every unpublished row, and no row is ever skipped.
type state struct {
	serial bool
	// cursor is the last outbox seq this relay published and acknowledged
	// (0: none yet). Later rounds read the rows after it, so a batch whose
	// mark is still being written is not read again.
	cursor int64
	rewind uint64     // the Relay.rewind value the cursor is valid for
	mark   chan error // the result of the mark being written, nil if none
	// unmarked counts the rows up to the cursor the broker acknowledged
	// and no mark covers yet; they are marked, with one range mark, every
	// `every` after the oldest of them (at markedAt), or sooner when many
	// accumulate.
	unmarked int
	markedAt time.Time
	every    time.Duration
	// base is the range mark this relay's reads build on (valid when
	// baseKnown): the newest when it last read the table afresh, or its own
	// last mark. A mark is written only while the table's newest mark is
	// still at least base, so a Republish that dropped marks is never
	// covered up again.
	base      int64
	baseKnown bool
	// ahead is the read of the batch after the one being published, started
	// when that one was full; after is the seq it reads after.
	ahead chan pendingRead
	after int64
	// held maps each key of the service that has producer-side dead
	// letters to the event id of the oldest: the relay parks the key's
	// rows behind it. It is read from the store before every read of the
	// outbox while it is not empty (an operator may replay or purge them
	// meanwhile), and after a reset (heldKnown false); only the relay adds
	// to it, so an empty one stays empty until this relay parks a row.
	held      map[string]string
	heldKnown bool
	// fail counts the rounds in a row whose publish failed with an error no
	// broker sentinel classifies (another outcome starts the count again).
	fail failCount
	// parts is the state of a partitioned broker's partitions (parts.go),
	// nil when it has one.
	parts *parts
	// above are rows the broker acknowledged above the partitions' floor,
	// to mark on their own with the next range mark.
	above []int64
}

// failCount counts the rounds in a row in which row seq's publish failed
// with an error no broker sentinel classifies.
type failCount struct {
	seq int64
	n   int
}

// settle waits for the mark being written and returns its error; after an
// error the cursor goes back to 0, so the rows it left unmarked are read
// (and re-published, harmlessly) again.
func (rs *state) settle() error {
	if rs.mark == nil {
		return nil
	}
	return rs.settled(<-rs.mark)
}

// settleDone settles the mark being written if it has finished, without
// waiting: a round that found nothing to publish learns of a failed mark
// then, rather than at the next mark, which may be long in coming (until
// then the rows it did not mark would count as the outbox's backlog).
func (rs *state) settleDone() error {
	select {
	case err := <-rs.mark: // a nil channel (no mark) is never ready
		return rs.settled(err)
	default:
		return nil
	}
}

// settled takes the result of the mark that was being written.
func (rs *state) settled(err error) error {
	rs.mark = nil
	if err != nil {
		rs.cursor = 0
		rs.unmarked = 0
		rs.above = nil
		rs.baseKnown = false
		rs.drop()
		rs.parts.abandon()
	}
	return err
}

// drop waits for the read ahead, if any, and forgets it.
func (rs *state) drop() {
	if rs.ahead != nil {
		<-rs.ahead
		rs.ahead = nil
	}
}

// reset forgets everything but the rewind count: the next round reads what
// the outbox table says. Acknowledged rows it had not marked yet are
// published again (the broker drops the copies).
func (rs *state) reset() {
	_ = rs.settle()
	rs.drop()
	rs.parts.abandon()
	rs.cursor = 0
	rs.unmarked = 0
	rs.above = nil
	rs.baseKnown = false
	rs.heldKnown = false
	rs.fail.n = 0
}

// maxUnmarked bounds how many acknowledged rows wait for their mark, and so
// how many a crash makes the relay publish again.
const maxUnmarked = 16384

// markDue reports whether the unmarked rows should be marked now.
func (rs *state) markDue() bool {
	return rs.unmarked > 0 && (rs.unmarked >= maxUnmarked || time.Since(rs.markedAt) >= rs.every)
}

// acked counts n more rows acknowledged up to the cursor, and starts their
// mark if it is due.
func (r *Relay) acked(ctx context.Context, rs *state, n int) error {
	if rs.unmarked == 0 {
		rs.markedAt = time.Now() // the oldest unmarked row's wait starts
	}
	rs.unmarked += n
	if rs.markDue() {
		return r.flushMarks(ctx, rs)
	}
	return nil
}

// flushMarks waits for the mark in flight, then starts marking every row up
// to the cursor and returns without waiting for it; the next settle waits.
func (r *Relay) flushMarks(ctx context.Context, rs *state) error {
	if err := rs.settle(); err != nil {
		return err
	}
	if rs.unmarked == 0 {
		return nil
	}
	if r.rewind.Load() != rs.rewind {
		// Republish reopened rows: what is unmarked goes out again.
		rs.unmarked = 0
		rs.above = nil
		return nil
	}
	from, upto := rs.base, rs.cursor
	if rs.parts != nil {
		// Up to the oldest row a partition has still to publish; the
		// rows acknowledged above it are marked on their own.
		upto = min(upto, rs.parts.floor(rs.cursor))
	}
	above := rs.above
	rs.unmarked = 0
	rs.above = nil
	rs.base = max(from, upto)
	done := make(chan error, 1)
	rs.mark = done
	// A mark that Drain or Stop cuts short is written anyway (within a
	// second), so a restart does not publish those rows again.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	go func() {
		defer cancel()
		if len(above) > 0 {
			if err := r.cfg.Store.OutboxMarkPublished(mctx, above, time.Now()); err != nil {
				done <- err
				return
			}
		}
		var err error
		if upto > from || len(above) == 0 {
			err = r.cfg.Store.OutboxMarkUpTo(mctx, store.OutboxMarkUpToParams{Service: r.cfg.Service, From: from, UpTo: upto, At: time.Now()})
		}
		done <- err
	}()
	return nil
}
