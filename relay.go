package herald

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

// RelayConfig tunes the outbox relay.
type RelayConfig struct {
	// BatchSize is how many outbox rows one round publishes (default 1000, the
	// largest atomic batch a NATS server takes by default).
	BatchSize int
	// PollInterval is the fallback poll when no commit signal arrives
	// (default 500ms). Commits in this process, and on PostgreSQL in any
	// process, wake the relay at once.
	PollInterval time.Duration
	// LeaseTTL is how long the relay lease lasts without renewal (default
	// 10s); it bounds the failover time when a relay's process dies.
	LeaseTTL time.Duration
	// MaxBackoff caps the wait between failed publish rounds (default 5s).
	MaxBackoff time.Duration
	// MarkInterval is how long acknowledged rows may wait to be marked
	// published (default 100ms): the relay marks everything the broker
	// acknowledged meanwhile in one statement, rather than writing to the
	// database after every batch. It never reads those rows again meanwhile;
	// after a crash the unmarked ones are published again, and the broker
	// and the inboxes drop the copies. On PostgreSQL, where rows can become
	// readable out of seq order, every batch is marked before the next read.
	MarkInterval time.Duration
	// DrainTimeout bounds how long Close keeps publishing what was committed
	// before it (default 5s), once the subscriptions have stopped: the
	// relay publishes the outbox until it is empty, retrying failures, and
	// gives up at the timeout — at once if the broker or the store is
	// closed. What it leaves stays in the outbox for the next start (or
	// another instance's relay) and is logged at Warn with its count. An
	// instance that does not hold the relay lease has nothing to publish:
	// the instance that holds it does (logged at Info if the outbox is not
	// empty).
	DrainTimeout time.Duration
}

func defaultRelayConfig() RelayConfig {
	return RelayConfig{BatchSize: 1000, PollInterval: 500 * time.Millisecond, LeaseTTL: 10 * time.Second,
		MaxBackoff: 5 * time.Second, MarkInterval: 100 * time.Millisecond, DrainTimeout: 5 * time.Second}
}

// WithRelay tunes the outbox relay; zero fields keep their defaults.
func WithRelay(rc RelayConfig) Option {
	return serviceOption(func(c *config) error {
		if rc.BatchSize < 0 || rc.PollInterval < 0 || rc.LeaseTTL < 0 || rc.MaxBackoff < 0 || rc.MarkInterval < 0 || rc.DrainTimeout < 0 {
			return fmt.Errorf("%w: relay config %+v has a negative field", ErrInvalidOption, rc)
		}
		d := defaultRelayConfig()
		if rc.BatchSize == 0 {
			rc.BatchSize = d.BatchSize
		}
		if rc.PollInterval == 0 {
			rc.PollInterval = d.PollInterval
		}
		if rc.LeaseTTL == 0 {
			rc.LeaseTTL = d.LeaseTTL
		}
		if rc.MaxBackoff == 0 {
			rc.MaxBackoff = d.MaxBackoff
		}
		if rc.MarkInterval == 0 {
			rc.MarkInterval = d.MarkInterval
		}
		if rc.DrainTimeout == 0 {
			rc.DrainTimeout = d.DrainTimeout
		}
		c.relay = rc
		return nil
	})
}

// WithOutboxRetention keeps published outbox rows for d (default 1h) so that
// Republish can refill a broker that lost its latest writes.
func WithOutboxRetention(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: outbox retention %v < 0", ErrInvalidOption, d)
		}
		c.outboxRetention = d
		return nil
	})
}

// relay publishes the service's outbox in commit order while it holds the
// service's relay lease. It marks rows only after the broker acknowledged
// them; a row whose publish failed is retried (the broker deduplicates by
// event id, so a publish whose ack was lost costs nothing). Marking a batch
// published overlaps with reading and publishing the next one.
//
// A row the broker refuses for good (broker.ErrRejected, or an error no
// broker sentinel classifies, unclassifiedAttempts rounds in a row) is
// parked instead: it becomes a producer-side dead letter (store.Engine.OutboxPark)
// and the rows behind it go on. The later rows of its partition key are
// parked too, as "held", for as long as the key has producer-side dead
// letters, so that none overtakes it; ReplayDeadLetters puts them back in
// order, PurgeDeadLetters discards them and frees the key. Keyless events
// hold nothing (they have no order to keep).
func (s *Service) relay(ctx context.Context, holder string, drain <-chan struct{}) {
	rc := s.cfg.relay
	lease := "relay/" + s.name
	var leased time.Time // when the lease was last renewed; zero if not held
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	woke := false // the last wait ended with a commit signal
	// Close closes drain: from then on the relay publishes until the outbox
	// is empty, without waiting for commits or polls, and stops; Close
	// cancels ctx when the drain timeout is over.
	draining := false
	var lastErr error // the last round's failure
	checkDrain := func() {
		if !draining {
			select {
			case <-drain:
				draining = true
			default:
			}
		}
	}
	wait := func(d time.Duration, wakeable bool) bool {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
		var wake <-chan struct{}
		if wakeable {
			wake = s.wake
		}
		var closing <-chan struct{}
		if !draining {
			closing = drain
		}
		woke = false
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		case <-wake:
			woke = true
		case <-closing:
			draining = true
		}
		return true
	}
	// On a dialect whose commit order shows rows only once every older
	// transaction ended (PostgreSQL), a commit's signal may come before its
	// rows are readable: after a signal that found nothing, look again soon,
	// more and more rarely, rather than only at the next poll.
	var recheck time.Duration
	rs := &relayState{serial: s.engine.DelaysVisibility(), every: rc.MarkInterval}
	defer func() {
		// What the broker acknowledged is marked (a mark outlives ctx by up
		// to a second; reset waits for it), so a restart does not publish
		// it again.
		_ = s.flushMarks(ctx, rs)
		rs.reset()
		if !leased.IsZero() {
			// Drained, the outbox may still hold rows: on PostgreSQL, ones
			// a running transaction elsewhere keeps unreadable.
			s.leftBehind(lastErr)
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.engine.LeaseRelease(rctx, lease, holder)
			cancel()
		}
	}()
	for ctx.Err() == nil {
		checkDrain()
		if time.Since(leased) > rc.LeaseTTL/3 {
			ok, err := s.engine.LeaseAcquire(ctx, store.LeaseAcquireParams{Name: lease, Holder: holder, TTL: rc.LeaseTTL})
			if err != nil || !ok {
				if err != nil && ctx.Err() == nil {
					s.log.Warn("relay lease", "err", err)
				}
				if !leased.IsZero() {
					rs.reset() // another relay may publish meanwhile
				}
				leased = time.Time{}
				if draining {
					if err == nil {
						s.leftToHolder()
					}
					return // the relay that holds the lease publishes the rest
				}
				if !wait(rc.LeaseTTL/3, false) {
					return
				}
				continue
			}
			if leased.IsZero() {
				rs.reset() // a new lease: read what the table says
			}
			leased = time.Now()
		}
		if r := s.rewind.Load(); r != rs.rewind {
			// Republish reset rows below the cursor to unpublished.
			rs.reset()
			rs.rewind = r
		}
		n, err := s.relayOnce(ctx, rc.BatchSize, rs)
		if err != nil {
			if ctx.Err() != nil {
				if lastErr == nil {
					lastErr = err
				}
				return
			}
			lastErr = err
			checkDrain()
			if draining && (errors.Is(err, broker.ErrClosed) || errors.Is(err, store.ErrClosed)) {
				return // no retry can succeed before the timeout
			}
			failures++
			d := backoff.Delay(failures, 50*time.Millisecond, rc.MaxBackoff)
			s.log.Warn("outbox relay", "err", err, "retry_in", d)
			if !wait(d, false) {
				return
			}
			continue
		}
		failures = 0
		if n >= rc.BatchSize {
			continue
		}
		checkDrain()
		if draining {
			if n == 0 {
				return // drained
			}
			continue // read again until nothing is left
		}
		d := rc.PollInterval
		switch {
		case n > 0 || !s.engine.DelaysVisibility():
			recheck = 0
		case woke:
			recheck = 10 * time.Millisecond
		case recheck > 0:
			recheck *= 2
		}
		if recheck > 0 && recheck < d {
			d = recheck
		} else {
			recheck = 0
		}
		if rs.unmarked > 0 {
			d = max(0, min(d, rs.every-time.Since(rs.markedAt)))
		}
		if !wait(d, true) {
			return
		}
	}
}

// leftToHolder logs, at Close of an instance without the relay lease, what
// the outbox holds for the instance that holds it — or, if that one died,
// for the next start after the lease expires.
func (s *Service) leftToHolder() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if n, _, err := s.OutboxStats(ctx); err == nil && n > 0 {
		s.log.Info("closed without the relay lease: the instance that holds it publishes the events in the outbox "+
			"(if it died, the next start does once the lease expires)", "unpublished", n, "lease_ttl", s.cfg.relay.LeaseTTL)
	}
}

// leftBehind logs, at Close, what the relay could not publish before the
// drain timeout (or the broker closed): the rows still in the outbox, which
// the next relay of the service publishes. err is the last failure.
func (s *Service) leftBehind(err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, oldest, serr := s.OutboxStats(ctx)
	switch {
	case serr != nil:
		s.log.Warn("closed without publishing everything it committed; cannot count what is left in the outbox",
			"err", serr, "publish_err", err)
	case n > 0:
		s.log.Warn("closed with committed events not published: they stay in the outbox until the service relays again",
			"unpublished", n, "oldest", oldest.Round(time.Millisecond), "drain_timeout", s.cfg.relay.DrainTimeout, "err", err)
	}
}

// relayState is what the relay carries from one batch to the next.
//
// The cursor, the read ahead and the mark that overlaps the next batch rely
// on rows becoming readable in seq order, which holds on SQLite (one writer
// at a time takes its seqs and commits before the next). On PostgreSQL a
// transaction can take a lower seq and become readable after a higher one
// was published, so there (serial) every round waits for its mark and reads
// every unpublished row, and no row is ever skipped.
type relayState struct {
	serial bool
	// cursor is the last outbox seq this relay published and acknowledged
	// (0: none yet). Later rounds read the rows after it, so a batch whose
	// mark is still being written is not read again.
	cursor int64
	rewind uint64     // the Service.rewind value the cursor is valid for
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
	// failSeq is the row whose publish failed with an error no broker
	// sentinel classifies, failN in how many rounds in a row (another
	// outcome of a round starts the count again).
	failSeq int64
	failN   int
}

// pendingRead is the result of one outbox read.
type pendingRead struct {
	rows []store.OutboxRow
	held map[string]string // the held keys read just before rows; nil: not read
	err  error
}

// heldStale reports whether the next outbox read must read the held keys
// first.
func (rs *relayState) heldStale() bool { return !rs.heldKnown || len(rs.held) > 0 }

// readOutbox reads up to limit rows after seq after and, with reload, the
// held keys before them: a row of a key an operator replays is then either
// read before the replay (and judged held, OutboxPark finding it gone) or
// after it (and free).
func (s *Service) readOutbox(ctx context.Context, after int64, limit int, reload bool) pendingRead {
	var r pendingRead
	if reload {
		if r.held, r.err = s.engine.OutboxParkedKeys(ctx, s.name); r.err != nil {
			return r
		}
	}
	r.rows, r.err = s.engine.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: s.name, After: after, Limit: limit})
	return r
}

// unclassifiedAttempts is how many rounds in a row a row's publish may fail
// with an error that no broker sentinel classifies before the relay parks
// it as refused.
const unclassifiedAttempts = 3

// Classes of publish failures.
const (
	publishRetry        = iota // transient, broker closed or unprovisioned, the relay stopping
	publishRejected            // broker.ErrRejected: refused for good
	publishUnclassified        // none of those: refused for good if it repeats
)

// classifyPublish sorts a publish failure into a class.
func classifyPublish(err error) int {
	switch {
	case errors.Is(err, broker.ErrRejected):
		return publishRejected
	case errors.Is(err, broker.ErrTransient), errors.Is(err, broker.ErrClosed), errors.Is(err, broker.ErrNotProvisioned),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return publishRetry
	}
	return publishUnclassified
}

// parked reports a row the relay parked as a producer-side dead letter.
func (s *Service) parked(ctx context.Context, e *envelope.Envelope, reason string, id int64, attempts int, cause string) {
	msg := "outbox relay parked an event the broker refused; later events of its key are held behind it"
	if reason == store.ReasonHeld {
		msg = "outbox relay held an event behind a parked one of its key"
	}
	s.log.Warn(msg, "event", e.ID, "type", e.Type, "key", e.Key, "dead_letter", id, "reason", reason, "err", cause)
	if s.observing() {
		s.observe(ctx, Observation{Hop: HopDeadLetter, Event: *e, Start: time.Now(), Outcome: OutcomeError,
			Reason: reason, Attempt: attempts, Err: errors.New(cause)})
	}
}

// settle waits for the mark being written and returns its error; after an
// error the cursor goes back to 0, so the rows it left unmarked are read
// (and re-published, harmlessly) again.
func (rs *relayState) settle() error {
	if rs.mark == nil {
		return nil
	}
	err := <-rs.mark
	rs.mark = nil
	if err != nil {
		rs.cursor = 0
		rs.unmarked = 0
		rs.baseKnown = false
		rs.drop()
	}
	return err
}

// drop waits for the read ahead, if any, and forgets it.
func (rs *relayState) drop() {
	if rs.ahead != nil {
		<-rs.ahead
		rs.ahead = nil
	}
}

// reset forgets everything but the rewind count: the next round reads what
// the outbox table says. Acknowledged rows it had not marked yet are
// published again (the broker drops the copies).
func (rs *relayState) reset() {
	_ = rs.settle()
	rs.drop()
	rs.cursor = 0
	rs.unmarked = 0
	rs.baseKnown = false
	rs.heldKnown = false
	rs.failN = 0
}

// maxUnmarked bounds how many acknowledged rows wait for their mark, and so
// how many a crash makes the relay publish again.
const maxUnmarked = 16384

// markDue reports whether the unmarked rows should be marked now.
func (rs *relayState) markDue() bool {
	return rs.unmarked > 0 && (rs.unmarked >= maxUnmarked || time.Since(rs.markedAt) >= rs.every)
}

// flushMarks waits for the mark in flight, then starts marking every row up
// to the cursor and returns without waiting for it; the next settle waits.
func (s *Service) flushMarks(ctx context.Context, rs *relayState) error {
	if err := rs.settle(); err != nil {
		return err
	}
	if rs.unmarked == 0 {
		return nil
	}
	if s.rewind.Load() != rs.rewind {
		// Republish reopened rows: what is unmarked goes out again.
		rs.unmarked = 0
		return nil
	}
	from, upto := rs.base, rs.cursor
	rs.unmarked = 0
	rs.base = upto
	done := make(chan error, 1)
	rs.mark = done
	// A mark that Close cuts short is written anyway (within a second), so
	// a restart does not publish those rows again.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	go func() {
		defer cancel()
		done <- s.engine.OutboxMarkUpTo(mctx, store.OutboxMarkUpToParams{Service: s.name, From: from, UpTo: upto, At: time.Now()})
	}()
	return nil
}

// relayOnce publishes one batch and returns how many rows it read. While
// the broker stores a full batch, it reads the next one; it starts marking
// the acknowledged rows published and returns without waiting for that; the
// next call waits for the mark before it starts its own.
func (s *Service) relayOnce(ctx context.Context, batch int, rs *relayState) (int, error) {
	var r pendingRead
	if rs.ahead != nil && rs.after == rs.cursor {
		r = <-rs.ahead
		rs.ahead = nil
	} else {
		rs.drop()
		if !rs.serial && !rs.baseKnown {
			var err error
			if rs.base, err = s.engine.OutboxCursor(ctx, s.name); err != nil {
				return 0, err
			}
			rs.baseKnown = true
		}
		r = s.readOutbox(ctx, rs.cursor, batch, rs.heldStale())
	}
	if r.err != nil {
		return 0, r.err
	}
	if r.held != nil {
		rs.held, rs.heldKnown = r.held, true
	}
	rows := r.rows
	if len(rows) == 0 {
		if rs.markDue() {
			return 0, s.flushMarks(ctx, rs)
		}
		return 0, nil
	}
	if len(rows) == batch && !rs.serial {
		// More is likely waiting: read it while the broker stores this.
		after := rows[len(rows)-1].Seq
		ahead := make(chan pendingRead, 1)
		rs.ahead, rs.after = ahead, after
		reload := rs.heldStale()
		go func() { ahead <- s.readOutbox(ctx, after, batch, reload) }()
	}
	// Rows of held keys wait behind their key's parked event.
	pub, err := s.parkHeld(ctx, rs, rows)
	if err != nil {
		return 0, err
	}
	if len(pub) == 0 {
		if !rs.serial {
			rs.cursor = rows[len(rows)-1].Seq // all parked: nothing to mark
		}
		return len(rows), nil
	}
	events := make([]*envelope.Envelope, len(pub))
	for i, r := range pub {
		events[i] = r.Event
	}
	start := time.Now()
	errs := s.broker.Publish(ctx, events)
	if s.observing() {
		d := time.Since(start)
		for i, e := range events {
			o := Observation{Hop: HopPublish, Event: *e, Start: start, Duration: d, Outcome: OutcomeOK}
			if errs[i] != nil {
				o.Outcome, o.Err = OutcomeError, errs[i]
			}
			s.observe(ctx, o)
		}
	}
	// Only the acknowledged prefix counts as published: what follows the
	// first failure is sent again, in order (the broker drops the copies it
	// already stored).
	acked := make([]int64, 0, len(pub))
	var firstErr error
	failed := -1
	for i, r := range pub {
		if errs[i] != nil {
			firstErr = fmt.Errorf("publish %s %s: %w", r.Event.Type, r.Event.ID, errs[i])
			failed = i
			break
		}
		acked = append(acked, r.Seq)
	}
	if len(acked) > 0 {
		if rs.serial {
			if err := s.engine.OutboxMarkPublished(ctx, acked, time.Now()); err != nil {
				return 0, err
			}
		} else {
			rs.cursor = acked[len(acked)-1]
			if firstErr == nil {
				rs.cursor = rows[len(rows)-1].Seq // the rows after the last published one were parked
			}
			if rs.unmarked == 0 {
				rs.markedAt = time.Now() // the oldest unmarked row's wait starts
			}
			rs.unmarked += len(acked)
			if rs.markDue() {
				if err := s.flushMarks(ctx, rs); err != nil {
					return 0, err
				}
			}
		}
	}
	if firstErr != nil {
		rs.drop() // it read after rows that must go again
		return s.refused(ctx, rs, pub[failed], errs[failed], firstErr, len(rows))
	}
	rs.failN = 0
	return len(rows), nil
}

// parkHeld parks the rows of held keys (see relayState.held) and returns the
// others, in order, to publish.
func (s *Service) parkHeld(ctx context.Context, rs *relayState, rows []store.OutboxRow) ([]store.OutboxRow, error) {
	if len(rs.held) == 0 {
		return rows, nil
	}
	var parks []store.Park
	for _, r := range rows {
		if first, ok := rs.held[r.Event.Key]; ok && r.Event.Key != "" {
			parks = append(parks, store.Park{Row: r, Reason: store.ReasonHeld,
				LastError: fmt.Sprintf("held behind event %s of key %q, which the broker refused", first, r.Event.Key)})
		}
	}
	if len(parks) == 0 {
		return rows, nil
	}
	res, err := s.engine.OutboxPark(ctx, s.name, parks)
	if err != nil {
		return nil, err
	}
	skip := make(map[int64]bool, len(parks))
	for i, p := range parks {
		switch {
		case res[i].DeadLetter != 0:
			skip[p.Row.Seq] = true
			s.parked(ctx, p.Row.Event, p.Reason, res[i].DeadLetter, 0, p.LastError)
		case res[i].Gone:
			skip[p.Row.Seq] = true // a replay moved it behind the events it replayed
		}
		// Otherwise the key's dead letters were replayed or purged: it
		// goes out now (the next read forgets the key).
	}
	pub := make([]store.OutboxRow, 0, len(rows)-len(skip))
	for _, r := range rows {
		if !skip[r.Seq] {
			pub = append(pub, r)
		}
	}
	return pub, nil
}

// refused handles the first failed publish of a round, of row with error
// perr (firstErr in context): a failure worth retrying is returned, so the
// relay retries the rest of the batch after a backoff; a refusal for good
// parks the row, holds its key, and lets the rows behind it go on at once
// (it returns n, the rows the round read, and no error).
func (s *Service) refused(ctx context.Context, rs *relayState, row store.OutboxRow, perr, firstErr error, n int) (int, error) {
	s.learnLimit() // the server may have moved, or changed its limit
	if ctx.Err() != nil {
		return 0, firstErr
	}
	attempts := 1
	switch classifyPublish(perr) {
	case publishRetry:
		rs.failN = 0
		return 0, firstErr
	case publishUnclassified:
		if rs.failN > 0 && rs.failSeq == row.Seq {
			rs.failN++
		} else {
			rs.failSeq, rs.failN = row.Seq, 1
		}
		if rs.failN < unclassifiedAttempts {
			return 0, firstErr
		}
		attempts = rs.failN
	}
	rs.failN = 0
	res, err := s.engine.OutboxPark(ctx, s.name, []store.Park{{Row: row, Reason: store.ReasonRefused, LastError: perr.Error(), Attempts: attempts}})
	if err != nil {
		return 0, fmt.Errorf("%w; parking it: %w", firstErr, err)
	}
	if id := res[0].DeadLetter; id != 0 {
		if k := row.Event.Key; k != "" {
			if rs.held == nil {
				rs.held = map[string]string{}
			}
			rs.held[k] = row.Event.ID
		}
		s.parked(ctx, row.Event, store.ReasonRefused, id, attempts, perr.Error())
	}
	s.signal() // the rows behind it go on now, not at the next poll
	return n, nil
}

// Republish sends again every outbox row published in the last d (within the
// outbox retention). After a broker lost acknowledged writes — a server
// without SyncAlways that crashed — this refills it; the broker drops the
// events it still has by their ids. It returns how many rows it reset in the
// outbox table; on SQLite the rows published since the relay's last mark
// (RelayConfig.MarkInterval) are not counted but go out again too.
func (s *Service) Republish(ctx context.Context, d time.Duration) (int64, error) {
	n, err := s.engine.OutboxRepublishSince(ctx, s.name, time.Now().Add(-d))
	if err == nil {
		// Even with nothing reset in the table: rows the relay published
		// since its last mark are unmarked, and go out again too.
		s.rewind.Add(1)
		s.signal()
	}
	return n, err
}

// OutboxStats reports the outbox backlog and the age of its oldest row. On
// SQLite rows the broker acknowledged count in the backlog until the relay's
// next mark (RelayConfig.MarkInterval).
func (s *Service) OutboxStats(ctx context.Context) (backlog int64, oldest time.Duration, err error) {
	n, t, err := s.store.OutboxStats(ctx, s.name)
	if err != nil || t.IsZero() {
		return n, 0, err
	}
	return n, time.Since(t), nil
}
