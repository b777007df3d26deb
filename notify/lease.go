package notify

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// The leases of claimed rows.
//
// A claim gives the row to this instance for a short lease (WithLease,
// default DefaultLease). While the instance holds the row — waiting for a
// worker, in a send, or sent and waiting for the round that records its
// outcome — a goroutine of the notifier renews the leases of every row it
// holds, in one statement, every third of the lease. A send may thus take
// much longer than the lease and keep its row, while the rows of a process
// that died come back to the other instances within one lease.
//
// The instance keeps, for every row it holds, the lease's end as it last
// wrote it (claim or renewal). When renewals fail (the database is down or
// too slow) and a lease runs out as the database sees it, another instance
// may claim the row and send it: from that moment this instance does not
// send it any more. A row whose turn comes after its lease ran out is
// released unsent; a send in flight when its lease runs out has its context
// cancelled and is abandoned, like a send interrupted by Close. Neither
// counts as an attempt, and the release does nothing if another instance
// has claimed the row meanwhile.

// DefaultLease is the lease of a claim unless WithLease says otherwise.
//
// 3s brings a killed instance's rows back to the others within 2 to 3 s
// (plus their poll interval), while the renewal, every second, can fail or
// come late once without any harm: a claim is lost only when no renewal
// has succeeded for a whole lease.
const DefaultLease = 3 * time.Second

// minLease bounds WithLease from below: the renewal runs every third of
// the lease, and a renewal is one write to the database.
const minLease = 100 * time.Millisecond

// errLeaseLost marks a send interrupted because its row's lease ran out
// before it could be renewed: another instance may send the row now.
var errLeaseLost = errors.New("notify: the delivery's lease ran out before it could be renewed")

// holdKey names one claim: the row and the claim's token (claimed_by).
type holdKey struct{ id, token string }

// hold is a row this instance claimed and has not recorded yet.
type hold struct {
	key    holdKey
	until  time.Time               // the lease's end as last written, by the notifier's clock
	lost   bool                    // the lease ran out unrenewed: the row is not sent any more
	cancel context.CancelCauseFunc // interrupts the row's send, once one started
	timer  *time.Timer             // fires at until (after which until is checked again)
	dead   bool                    // forgotten: the timer must do nothing
}

// leases is what this instance holds: every claimed row until its outcome
// is recorded, with the end of its lease.
type leases struct {
	lease time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu   sync.Mutex
	held map[holdKey]*hold
}

func newLeases(lease time.Duration, now func() time.Time, log *slog.Logger) *leases {
	return &leases{lease: lease, now: now, log: log, held: map[holdKey]*hold{}}
}

// every is the renewal interval.
func (l *leases) every() time.Duration { return l.lease / 3 }

func keyOf(w *row) holdKey { return holdKey{w.ID, w.ClaimedBy} }

// hold registers a row just claimed (its claim committed), leased until
// w.ClaimUntil.
func (l *leases) hold(w *row) {
	k := keyOf(w)
	h := &hold{key: k, until: w.ClaimUntil}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old := l.held[k]; old != nil {
		old.dead = true
		old.timer.Stop()
	}
	h.timer = time.AfterFunc(h.until.Sub(l.now()), func() { l.expire(h) })
	l.held[k] = h
}

// begin tells whether the row w may be sent: it is held and its lease has
// not run out. If so, a lost lease from now on calls cancel with
// errLeaseLost.
func (l *leases) begin(w *row, cancel context.CancelCauseFunc) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held[keyOf(w)]
	if h == nil || h.lost {
		return false
	}
	if !l.now().Before(h.until) { // the clock is past the lease before the timer saw it
		l.loseLocked(h, "before its send")
		return false
	}
	h.cancel = cancel
	return true
}

// forget drops w once its outcome is recorded (or could not be).
func (l *leases) forget(w *row) {
	k := keyOf(w)
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.held[k]; h != nil {
		h.dead = true
		h.timer.Stop()
		delete(l.held, k)
	}
}

// renewable returns the claims whose leases are to be renewed: every row
// held whose lease has not run out.
func (l *leases) renewable() []holdKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]holdKey, 0, len(l.held))
	for k, h := range l.held {
		if !h.lost {
			keys = append(keys, k)
		}
	}
	return keys
}

// renewed records that the database now leases the claims got until
// until. A lease that ran out meanwhile stays lost: its send was
// interrupted already.
func (l *leases) renewed(until time.Time, got []holdKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range got {
		h := l.held[k]
		if h == nil || h.lost || !until.After(h.until) {
			continue
		}
		h.until = until
		h.timer.Reset(until.Sub(now))
	}
}

// expire runs when h's timer fires: the lease ran out, unless a renewal
// moved it meanwhile.
func (l *leases) expire(h *hold) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h.dead || h.lost {
		return
	}
	if d := h.until.Sub(l.now()); d > 0 { // renewed while the timer fired
		h.timer.Reset(d)
		return
	}
	l.loseLocked(h, "")
}

// loseLocked marks h's lease lost and interrupts its send; l.mu is held.
func (l *leases) loseLocked(h *hold, when string) {
	h.lost = true
	what := "the row is not sent"
	if h.cancel != nil {
		what = "its send is interrupted"
		h.cancel(errLeaseLost)
	}
	if when != "" {
		what += " (" + when + ")"
	}
	l.log.Warn("delivery lease ran out before it could be renewed: another instance may send it; "+what,
		"delivery", h.key.id, "claim", h.key.token, "lease_until", h.until)
}

// renewFunc extends the leases of keys to until in the database and returns
// the claims it extended (those still held by their token, in state
// sending).
type renewFunc func(ctx context.Context, keys []holdKey, until time.Time) ([]holdKey, error)

// run renews the leases every third of the lease until ctx ends. A renewal
// that fails is logged and tried again at the next tick; its rows keep the
// lease they had.
func (l *leases) run(ctx context.Context, renew renewFunc) {
	t := time.NewTicker(l.every())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		keys := l.renewable()
		if len(keys) == 0 {
			continue
		}
		// The lease is counted from before the statement: that is what the
		// database gets, however long the statement takes.
		until := l.now().Add(l.lease)
		rctx, cancel := context.WithTimeout(ctx, l.lease)
		got, err := renew(rctx, keys, until)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("renew delivery leases", "rows", len(keys), "err", err)
			}
			continue
		}
		l.renewed(until, got)
	}
}

// renew is the notifier's renewFunc: one UPDATE of the rows by primary key,
// each still claimed by one of this instance's tokens and in state sending.
// On PostgreSQL it skips the rows a round is recording (locked): they are
// done, and waiting for them could deadlock with the round's updates.
func (n *Notifier) renew(ctx context.Context, keys []holdKey, until time.Time) ([]holdKey, error) {
	args := make([]any, 0, 2+2*len(keys))
	args = append(args, nanos(until), nanos(until))
	for _, k := range keys {
		args = append(args, k.id)
	}
	tokens := map[string]bool{}
	for _, k := range keys {
		if !tokens[k.token] {
			tokens[k.token] = true
			args = append(args, k.token)
		}
	}
	skipLocked := ""
	if n.pg {
		skipLocked = " FOR UPDATE SKIP LOCKED"
	}
	q := n.st.Rebind(`UPDATE herald_notify_deliveries SET claim_until = ?, due_at = ?
		WHERE id IN (SELECT id FROM herald_notify_deliveries WHERE id IN (` + placeholders(len(keys)) + `)
		AND claimed_by IN (` + placeholders(len(tokens)) + `) AND state = 'sending'` + skipLocked + `)
		RETURNING id, claimed_by`)
	// In a transaction, which on SQLite waits its turn for the write lock
	// with the other writers of the process (an autocommit query would not).
	tx, err := n.eng.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rs, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	got := make([]holdKey, 0, len(keys))
	for rs.Next() {
		var k holdKey
		if err := rs.Scan(&k.id, &k.token); err != nil {
			rs.Close()
			return nil, err
		}
		got = append(got, k)
	}
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return got, nil
}

// placeholders returns "?, ?, …" (k of them).
func placeholders(k int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", k), ", ")
}
