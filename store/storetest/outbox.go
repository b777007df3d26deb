package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

func (h *harness) outboxCommitOrder(t *testing.T) {
	s := h.open(t)
	a := events("orders", "a", 6)
	b := events("billing", "b", 2)
	commit(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, a[0], b[0], a[1])
	})
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[2]) })
	rollback(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, event("orders", "rolled-back", t0)) })
	commit(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, a[3])
		appendOutbox(t, s, tx, b[1])
		appendOutbox(t, s, tx, a[4], a[5])
	})
	checkPending(t, "orders", pending(t, s, "orders", 100), a)
	checkPending(t, "billing", pending(t, s, "billing", 100), b)
	if rows := pending(t, s, "shipping", 100); len(rows) != 0 {
		t.Errorf("PendingOutbox of a service without rows returned %v", ids(rows))
	}
	// Reading does not consume.
	checkPending(t, "orders again", pending(t, s, "orders", 100), a)
}

func (h *harness) outboxRoundTrip(t *testing.T) {
	s := h.open(t)
	evs := []*envelope.Envelope{
		event("orders", "z-utc", t0),
		event("orders", "z-zone", t0.In(time.FixedZone("UTC+5:30", 5*3600+1800)).Add(time.Nanosecond)),
		event("orders", "z-1969", time.Date(1969, 7, 20, 20, 17, 40, 1, time.UTC)),
	}
	evs[2].Kind, evs[2].Key, evs[2].CausationID, evs[2].TraceParent, evs[2].TraceState = envelope.KindNotification, "", "", "", ""
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, evs...) })
	checkPending(t, "orders", pending(t, s, "orders", 10), evs)
}

func (h *harness) outboxLimit(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	a := events("orders", "l", 5)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	for _, limit := range []int{1, 2, 4, 5, 6} {
		want := a[:min(limit, len(a))]
		checkPending(t, fmt.Sprintf("limit %d", limit), pending(t, s, "orders", limit), want)
	}
	// After a seq: the rows that follow it, published or not before it.
	all := pending(t, s, "orders", 100)
	for i, r := range all {
		rows, err := eng.OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", After: r.Seq, Limit: 2})
		if err != nil {
			t.Fatalf("PendingOutboxAfter: %v", err)
		}
		checkPending(t, fmt.Sprintf("after row %d", i), rows, a[i+1:min(i+3, len(a))])
	}
	if err := eng.OutboxMarkPublished(context.Background(), []int64{all[3].Seq}, t0); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	rows, err := eng.OutboxPendingList(context.Background(), store.OutboxPendingListParams{Service: "orders", After: all[1].Seq, Limit: 100})
	if err != nil {
		t.Fatalf("PendingOutboxAfter: %v", err)
	}
	checkPending(t, "after row 1, row 3 published", rows, []*envelope.Envelope{a[2], a[4]})
}

func (h *harness) outboxMarkPublished(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := events("orders", "m", 5)
	b := events("billing", "mb", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], a[1], b[0], a[2], a[3], a[4]) })
	rows := pending(t, s, "orders", 2)
	if err := eng.OutboxMarkPublished(ctx, seqs(rows), t0); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	checkPending(t, "after marking 2", pending(t, s, "orders", 100), a[2:])
	if err := eng.OutboxMarkPublished(ctx, nil, t0); err != nil {
		t.Errorf("MarkPublished(no seqs): %v", err)
	}
	// Marking out of order, again, or an unknown seq is harmless.
	rows = pending(t, s, "orders", 100)
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[2].Seq, rows[0].Seq, rows[0].Seq, 1 << 50}, t0); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	checkPending(t, "after marking 4", pending(t, s, "orders", 100), a[3:4])
	checkPending(t, "billing untouched", pending(t, s, "billing", 100), b)
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 1 {
		t.Errorf("OutboxStats backlog = %d, %v; want 1", n, err)
	}
}

// outboxMarkUpTo checks range marks: everything of a service up to a seq is
// published with one row, seen by OutboxPendingList, OutboxStats,
// OutboxLastPublished, OutboxRepublishSince and OutboxPrune like per-row marks.
func (h *harness) outboxMarkUpTo(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := events("orders", "u", 6)
	b := events("billing", "ub", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], a[1], b[0], a[2], a[3], b[1], a[4], a[5]) })
	rows := pending(t, s, "orders", 100)
	cursor := func() int64 {
		t.Helper()
		c, err := eng.OutboxCursor(ctx, "orders")
		if err != nil {
			t.Fatalf("OutboxCursor: %v", err)
		}
		return c
	}
	if c := cursor(); c != 0 {
		t.Fatalf("OutboxCursor before any mark = %d, want 0", c)
	}
	upTo := func(i int, at time.Time) {
		t.Helper()
		if err := eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: cursor(), UpTo: rows[i].Seq, At: at}); err != nil {
			t.Fatalf("MarkPublishedUpTo(%d): %v", i, err)
		}
	}
	upTo(1, t0.Add(-2*time.Hour))
	if c := cursor(); c != rows[1].Seq {
		t.Fatalf("OutboxCursor = %d, want %d", c, rows[1].Seq)
	}
	checkPending(t, "after marking up to a[1]", pending(t, s, "orders", 100), a[2:])
	checkPending(t, "billing untouched", pending(t, s, "billing", 100), b)
	// A read after an older position still starts after the mark.
	if got, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", After: rows[0].Seq, Limit: 100}); err != nil {
		t.Fatal(err)
	} else {
		checkPending(t, "after an older cursor", got, a[2:])
	}
	upTo(3, t0)
	upTo(3, t0.Add(time.Minute)) // again: harmless
	upTo(2, t0)                  // an older mark does not move the cursor back
	checkPending(t, "after marking up to a[3]", pending(t, s, "orders", 100), a[4:])
	if n, oldest, err := s.OutboxStats(ctx, "orders"); err != nil || n != 2 || !oldest.Equal(a[4].Time) {
		t.Errorf("OutboxStats = %d, %v, %v; want 2, %v", n, oldest, err, a[4].Time)
	}
	if got, err := eng.OutboxLastPublished(ctx, "orders"); err != nil || !got.Equal(t0) {
		t.Errorf("LastPublished = %v, %v; want %v", got, err, t0)
	}
	// A per-row mark after the range works alongside it.
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[5].Seq}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkPending(t, "after a per-row mark", pending(t, s, "orders", 100), a[4:5])
	// Republishing since t0 drops the marks made since: the cursor goes
	// back to a[1], and a[2], a[3] and a[5] are sent again.
	n, err := eng.OutboxRepublishSince(ctx, "orders", t0)
	if err != nil || n != 3 {
		t.Fatalf("RepublishSince(t0) = %d, %v; want 3", n, err)
	}
	checkPending(t, "republished", pending(t, s, "orders", 100), a[2:])
	// A relay whose reads built on the dropped mark may not cover the
	// reopened rows again.
	err = eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: rows[3].Seq, UpTo: rows[5].Seq, At: t0.Add(2 * time.Hour)})
	if !errors.Is(err, store.ErrMarkMoved) {
		t.Fatalf("MarkPublishedUpTo from a dropped mark: err = %v, want ErrMarkMoved", err)
	}
	checkPending(t, "after the refused mark", pending(t, s, "orders", 100), a[2:])
	if got, err := eng.OutboxLastPublished(ctx, "orders"); err != nil || !got.Equal(t0.Add(-2*time.Hour)) {
		t.Errorf("LastPublished after republish = %v, %v; want %v", got, err, t0.Add(-2*time.Hour))
	}
	// Pruning deletes the rows under marks older than the cutoff and keeps
	// the newest mark, so the cursor stays where it is.
	upTo(3, t0)
	n, err = eng.OutboxPrune(ctx, t0.Add(-time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PruneOutbox = %d, %v; want 2 (a[0], a[1])", n, err)
	}
	checkPending(t, "after prune", pending(t, s, "orders", 100), a[4:])
	if n, err = eng.OutboxPrune(ctx, t0.Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("second PruneOutbox = %d, %v; want 2 (a[2], a[3])", n, err)
	}
	checkPending(t, "after the second prune", pending(t, s, "orders", 100), a[4:])
	checkPending(t, "billing after prunes", pending(t, s, "billing", 100), b)
}

func (h *harness) outboxRepublish(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	p := events("orders", "p", 4)
	o := events("billing", "o", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, p...); appendOutbox(t, s, tx, o...) })
	rows := pending(t, s, "orders", 100)
	mark := func(at time.Time, rs ...store.OutboxRow) {
		t.Helper()
		if err := eng.OutboxMarkPublished(ctx, seqs(rs), at); err != nil {
			t.Fatalf("MarkPublished: %v", err)
		}
	}
	mark(t0.Add(-2*time.Hour), rows[0])
	mark(t0.Add(-time.Nanosecond), rows[1])
	mark(t0, rows[2]) // at since: republished
	mark(t0.Add(time.Minute), rows[3])
	mark(t0, pending(t, s, "billing", 100)...)
	if got := pending(t, s, "orders", 100); len(got) != 0 {
		t.Fatalf("pending after marking all: %v", ids(got))
	}

	n, err := eng.OutboxRepublishSince(ctx, "orders", t0)
	if err != nil {
		t.Fatalf("RepublishSince: %v", err)
	}
	if n != 2 {
		t.Errorf("RepublishSince reset %d rows, want 2", n)
	}
	checkPending(t, "republished", pending(t, s, "orders", 100), p[2:])
	if got := pending(t, s, "billing", 100); len(got) != 0 {
		t.Errorf("RepublishSince(orders) reset billing rows %v", ids(got))
	}
	// Pending rows are not counted again.
	if n, err := eng.OutboxRepublishSince(ctx, "orders", t0); err != nil || n != 0 {
		t.Errorf("second RepublishSince = %d, %v; want 0", n, err)
	}
	if n, err := eng.OutboxRepublishSince(ctx, "orders", time.Time{}.Add(time.Hour)); err != nil || n != 2 {
		t.Errorf("RepublishSince(long ago) = %d, %v; want 2", n, err)
	}
	checkPending(t, "all republished", pending(t, s, "orders", 100), p)
}

func (h *harness) outboxPrune(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	q := events("orders", "q", 4)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, q...) })
	rows := pending(t, s, "orders", 100)
	for i, at := range []time.Time{t0.Add(-2 * time.Hour), t0.Add(-time.Nanosecond), t0.Add(time.Hour)} {
		if err := eng.OutboxMarkPublished(ctx, []int64{rows[i].Seq}, at); err != nil {
			t.Fatalf("MarkPublished: %v", err)
		}
	}
	// q[3] stays pending: never pruned, however old.
	n, err := eng.OutboxPrune(ctx, t0)
	if err != nil {
		t.Fatalf("PruneOutbox: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneOutbox removed %d, want 2", n)
	}
	if n, err := eng.OutboxPrune(ctx, t0); err != nil || n != 0 {
		t.Errorf("second PruneOutbox = %d, %v; want 0", n, err)
	}
	// What is left: q[2] (published after the cutoff) and q[3] (pending).
	if n, err := eng.OutboxRepublishSince(ctx, "orders", time.Time{}.Add(time.Hour)); err != nil || n != 1 {
		t.Errorf("RepublishSince(long ago) after prune = %d, %v; want 1", n, err)
	}
	checkPending(t, "after prune", pending(t, s, "orders", 100), q[2:])
	if n, err := eng.OutboxPrune(ctx, t0.Add(1000*time.Hour)); err != nil || n != 0 {
		t.Errorf("PruneOutbox with only pending rows = %d, %v; want 0", n, err)
	}
}

func (h *harness) outboxStats(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	n, oldest, err := s.OutboxStats(ctx, "orders")
	if err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("OutboxStats(empty) = %d, %v, %v; want 0, zero time", n, oldest, err)
	}
	late := event("orders", "late", t0.Add(5*time.Minute))
	early := event("orders", "early", t0.Add(-3*time.Minute+time.Nanosecond))
	mid := event("orders", "mid", t0)
	other := event("billing", "other", t0.Add(-time.Hour))
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, late, early, mid, other) })
	n, oldest, err = s.OutboxStats(ctx, "orders")
	if err != nil || n != 3 || !oldest.Equal(early.Time) {
		t.Fatalf("OutboxStats = %d, %v, %v; want 3, %v", n, oldest, err, early.Time)
	}
	if oldest.Location() != time.UTC {
		t.Errorf("OutboxStats oldest in %v, want UTC", oldest.Location())
	}
	rows := pending(t, s, "orders", 100)
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[1].Seq}, t0); err != nil { // early
		t.Fatal(err)
	}
	n, oldest, err = s.OutboxStats(ctx, "orders")
	if err != nil || n != 2 || !oldest.Equal(mid.Time) {
		t.Fatalf("OutboxStats after publishing the oldest = %d, %v, %v; want 2, %v", n, oldest, err, mid.Time)
	}
	if err := eng.OutboxMarkPublished(ctx, seqs(pending(t, s, "orders", 100)), t0); err != nil {
		t.Fatal(err)
	}
	n, oldest, err = s.OutboxStats(ctx, "orders")
	if err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("OutboxStats after publishing all = %d, %v, %v; want 0, zero time", n, oldest, err)
	}
	if n, _, err := s.OutboxStats(ctx, "billing"); err != nil || n != 1 {
		t.Errorf("OutboxStats(billing) = %d, %v; want 1", n, err)
	}
}

func (h *harness) outboxRollback(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	rollback(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, events("orders", "r", 3)...)
		appendEventLog(t, s, tx, events("orders", "r", 3)...)
	})
	if rows := pending(t, s, "orders", 100); len(rows) != 0 {
		t.Fatalf("pending after rollback: %v", ids(rows))
	}
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 0 {
		t.Fatalf("OutboxStats after rollback = %d, %v; want 0", n, err)
	}
	// The store works normally afterwards.
	e := event("orders", "after", t0)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, e) })
	checkPending(t, "after rollback", pending(t, s, "orders", 100), []*envelope.Envelope{e})
	if err := eng.OutboxAppend(ctx, nil, nil); err != nil {
		t.Errorf("AppendOutbox of no events: %v", err)
	}
}

func (h *harness) outboxLargeBatch(t *testing.T) {
	s := h.open(t)
	// 1201 = two full multi-row INSERTs (500 rows) and a partial one.
	big := events("orders", "big", 1201)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, big...) })
	checkPending(t, "1201 events", pending(t, s, "orders", 5000), big)
	// Exactly one chunk's worth, too.
	s2 := h.open(t)
	chunk := events("orders", "chunk", 500)
	commit(t, s2, func(tx *sql.Tx) { appendOutbox(t, s2, tx, chunk...) })
	if rows := pending(t, s2, "orders", 5000); len(rows) != 500 {
		t.Fatalf("500 events: %d pending", len(rows))
	}
}

// outboxConcurrent has several writers commit transactions of outbox rows
// while a relay reads pending rows and marks them published, as the real
// relay does. Every row must be relayed exactly once, and each writer's rows
// in the order the writer committed them.
func (h *harness) outboxConcurrent(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	const (
		writers = 6
		txs     = 20
		perTx   = 3
		total   = writers * txs * perTx
	)
	errc := make(chan error, writers+1)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for k := range txs {
				evs := make([]*envelope.Envelope, perTx)
				for r := range evs {
					evs[r] = event("orders", fmt.Sprintf("w%02d-%04d", w, k*perTx+r), t0)
				}
				tx, err := eng.Begin(ctx)
				if err != nil {
					errc <- fmt.Errorf("writer %d: begin: %w", w, err)
					return
				}
				// Two statements per transaction: rows of one transaction
				// need not come from one INSERT.
				if err := eng.OutboxAppend(ctx, tx, evs[:1]); err != nil {
					tx.Rollback()
					errc <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				if err := eng.OutboxAppend(ctx, tx, evs[1:]); err != nil {
					tx.Rollback()
					errc <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				if err := tx.Commit(); err != nil {
					errc <- fmt.Errorf("writer %d: commit: %w", w, err)
					return
				}
			}
		})
	}
	// The relay, running while the writers commit.
	relayed := make(chan []string, 1)
	go func() {
		var got []string
		defer func() { relayed <- got }()
		deadline := time.Now().Add(2 * time.Minute)
		for len(got) < total {
			if time.Now().After(deadline) {
				errc <- fmt.Errorf("relay: %d of %d rows after two minutes", len(got), total)
				return
			}
			rows, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 7})
			if err != nil {
				errc <- fmt.Errorf("relay: %w", err)
				return
			}
			if len(rows) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			got = append(got, ids(rows)...)
			if err := eng.OutboxMarkPublished(ctx, seqs(rows), time.Now()); err != nil {
				errc <- fmt.Errorf("relay: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	got := <-relayed
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	next := make(map[string]int)
	seen := make(map[string]bool)
	for _, id := range got {
		if seen[id] {
			t.Fatalf("row %s relayed twice", id)
		}
		seen[id] = true
		w, n, _ := strings.Cut(id, "-")
		if want := fmt.Sprintf("%04d", next[w]); n != want {
			t.Fatalf("writer %s: relayed row %s before row %s-%s: not in commit order", w, id, w, want)
		}
		next[w]++
	}
	if len(got) != total {
		t.Fatalf("relayed %d rows, want %d", len(got), total)
	}
	if rows := pending(t, s, "orders", 10); len(rows) != 0 {
		t.Fatalf("rows pending after the relay took them all: %v", ids(rows))
	}
}

// outboxInFlight checks the visibility rule that keeps the relay in commit
// order on PostgreSQL: while a transaction A that wrote outbox rows is
// running, rows that a later transaction B committed are not pending,
// because A could still commit rows that sort before them. On engines that
// serialise writers (SQLite) A and B cannot overlap and the rule holds
// trivially; there the test only checks the sequential case.
func (h *harness) outboxInFlight(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	if s.Dialect() != "postgres" {
		a, b := event("orders", "a", t0), event("orders", "b", t0)
		commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a) })
		commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, b) })
		checkPending(t, "sequential", pending(t, s, "orders", 10), []*envelope.Envelope{a, b})
		return
	}
	for _, end := range []string{"commit", "rollback"} {
		t.Run(end, func(t *testing.T) {
			a, b := event("orders", "a-"+end, t0), event("orders", "b-"+end, t0)
			txA, err := eng.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer txA.Rollback()
			appendOutbox(t, s, txA, a)
			commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, b) })

			rows, err := eng.OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 0 {
				t.Fatalf("PendingOutbox returned %v while a transaction that wrote an earlier outbox row is still running", ids(rows))
			}
			want := []*envelope.Envelope{a, b}
			if end == "commit" {
				if err := txA.Commit(); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := txA.Rollback(); err != nil {
					t.Fatal(err)
				}
				want = want[1:]
			}
			rows = pending(t, s, "orders", 10)
			checkPending(t, "after "+end, rows, want)
			if err := eng.OutboxMarkPublished(ctx, seqs(rows), t0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func (h *harness) outboxLastPublished(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	last := func(service string, want time.Time) {
		t.Helper()
		got, err := eng.OutboxLastPublished(ctx, service)
		if err != nil {
			t.Fatalf("LastPublished(%s): %v", service, err)
		}
		if !got.Equal(want) || (!got.IsZero() && got.Location() != time.UTC) {
			t.Fatalf("LastPublished(%s) = %v, want %v (UTC)", service, got, want)
		}
	}
	last("orders", time.Time{})
	commit(t, s, func(tx *sql.Tx) {
		appendOutbox(t, s, tx, events("orders", "lp", 3)...)
		appendOutbox(t, s, tx, events("billing", "lb", 1)...)
	})
	last("orders", time.Time{}) // pending rows were never published
	rows := pending(t, s, "orders", 10)
	later := t0.Add(time.Hour + time.Nanosecond)
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[1].Seq}, later); err != nil {
		t.Fatal(err)
	}
	if err := eng.OutboxMarkPublished(ctx, []int64{rows[0].Seq}, t0); err != nil { // marked after, published earlier
		t.Fatal(err)
	}
	last("orders", later)
	last("billing", time.Time{})
	if _, err := eng.OutboxPrune(ctx, later.Add(time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	last("orders", time.Time{})
}

// outboxListen checks Engine.OutboxListen: a dialect without commit notifications
// says so at once with ErrNoListen; one with them reports the service of
// every commit of outbox rows, from any connection, until ctx ends.
func (h *harness) outboxListen(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Notification channels may be shared by every test on the server.
	service := fmt.Sprintf("listen-%d", time.Now().UnixNano())
	heard := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- eng.OutboxListen(ctx, func(svc string) {
			if svc == service {
				select {
				case heard <- struct{}{}:
				default:
				}
			}
		})
	}()
	// Listen connects in the background: commit until a commit is heard.
	deadline := time.After(time.Minute)
	for i := 0; ; i++ {
		select {
		case err := <-done:
			if errors.Is(err, store.ErrNoListen) {
				if s.Dialect() == "postgres" {
					t.Fatalf("Listen on PostgreSQL: %v", err)
				}
				t.Logf("Listen: %v (the store polls)", err)
				return
			}
			t.Fatalf("Listen returned %v before ctx ended", err)
		case <-heard:
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Listen after ctx ended: %v, want nil", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("Listen did not return within a minute of ctx ending")
			}
			return
		case <-deadline:
			t.Fatal("no notification of an outbox commit within a minute")
		case <-time.After(50 * time.Millisecond):
			commit(t, s, func(tx *sql.Tx) {
				appendOutbox(t, s, tx, event(service, fmt.Sprintf("l%d", i), t0))
			})
		}
	}
}
