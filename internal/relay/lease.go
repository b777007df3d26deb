package relay

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/backoff"
	"github.com/heraldhq/herald/store"
)

// run publishes the outbox in rounds while the relay holds the lease: it
// acquires the lease, renews it every third of its TTL, forgets what it knew
// of the table when it lost the lease (another relay may publish meanwhile)
// or gained it, and releases it when it stops. After a failed round it
// waits a backoff; after a round that was not full, the poll interval or a
// wake. drain closed: it publishes until the outbox is empty and returns;
// ctx ends it wherever it is.
func (r *Relay) run(ctx context.Context, drain <-chan struct{}) {
	cfg := &r.cfg
	var leased time.Time // when the lease was last renewed; zero if not held
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	woke := false // the last wait ended with a wake
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
			wake = r.wake
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
	// rows are readable: after a wake that found nothing, look again soon,
	// more and more rarely, rather than only at the next poll.
	var recheck time.Duration
	rs := &state{serial: r.serial, every: cfg.MarkInterval, parts: newParts(cfg.Broker)}
	defer func() {
		// What the broker acknowledged is marked (a mark outlives ctx by up
		// to a second; reset waits for it), so a restart does not publish
		// it again.
		r.landParts(ctx, rs)
		_ = r.flushMarks(ctx, rs)
		rs.reset()
		if !leased.IsZero() {
			// Drained, the outbox may still hold rows: on PostgreSQL, ones
			// a running transaction elsewhere keeps unreadable.
			r.leftBehind(lastErr)
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = cfg.Store.LeaseRelease(rctx, r.lease, cfg.Holder)
			cancel()
		}
	}()
	for ctx.Err() == nil {
		checkDrain()
		if time.Since(leased) > cfg.LeaseTTL/3 {
			ok, err := cfg.Store.LeaseAcquire(ctx, store.LeaseAcquireParams{Name: r.lease, Holder: cfg.Holder, TTL: cfg.LeaseTTL})
			if err != nil || !ok {
				if err != nil && ctx.Err() == nil {
					cfg.Logger.Warn("relay lease", "err", err)
				}
				if !leased.IsZero() {
					rs.reset() // another relay may publish meanwhile
				}
				leased = time.Time{}
				if draining {
					if err == nil {
						r.leftToHolder()
					}
					return // the relay that holds the lease publishes the rest
				}
				if !wait(cfg.LeaseTTL/3, false) {
					return
				}
				continue
			}
			if leased.IsZero() {
				rs.reset() // a new lease: read what the table says
			}
			leased = time.Now()
		}
		if n := r.rewind.Load(); n != rs.rewind {
			// Republish reset rows below the cursor to unpublished.
			rs.reset()
			rs.rewind = n
		}
		var n int
		var err error
		if rs.parts != nil {
			n, err = r.roundParts(ctx, rs)
		} else {
			n, err = r.round(ctx, rs)
		}
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
			d := backoff.Delay(failures, 50*time.Millisecond, cfg.MaxBackoff)
			cfg.Logger.Warn("outbox relay", "err", err, "retry_in", d)
			if !wait(d, false) {
				return
			}
			continue
		}
		failures = 0
		if n >= cfg.BatchSize {
			continue
		}
		checkDrain()
		if draining {
			if n == 0 && !rs.parts.behind() {
				return // drained
			}
			if n > 0 {
				continue // read again until nothing is left
			}
		}
		d := cfg.PollInterval
		switch {
		case n > 0 || !r.serial:
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
		if next, ok := rs.parts.nextSend(); ok {
			d = min(d, next) // a partition's queue may go again
		}
		if !wait(d, true) {
			return
		}
	}
}

// leftToHolder logs, when a relay without the lease drains, what the outbox
// holds for the instance that holds it — or, if that one died, for the next
// start after the lease expires.
func (r *Relay) leftToHolder() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if n, _, err := r.cfg.Store.OutboxStats(ctx, r.cfg.Service); err == nil && n > 0 {
		r.cfg.Logger.Info("closed without the relay lease: the instance that holds it publishes the events in the outbox "+
			"(if it died, the next start does once the lease expires)", "unpublished", n, "lease_ttl", r.cfg.LeaseTTL)
	}
}

// leftBehind logs, when the relay stops, what it could not publish before
// the drain timeout (or the broker closed): the rows still in the outbox,
// which the next relay of the service publishes. err is the last failure.
func (r *Relay) leftBehind(err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, oldest, serr := r.cfg.Store.OutboxStats(ctx, r.cfg.Service)
	var age time.Duration
	if serr == nil && !oldest.IsZero() {
		age = time.Since(oldest)
	}
	switch {
	case serr != nil:
		r.cfg.Logger.Warn("closed without publishing everything it committed; cannot count what is left in the outbox",
			"err", serr, "publish_err", err)
	case n > 0:
		r.cfg.Logger.Warn("closed with committed events not published: they stay in the outbox until the service relays again",
			"unpublished", n, "oldest", age.Round(time.Millisecond), "drain_timeout", r.cfg.DrainTimeout, "err", err)
	}
}
