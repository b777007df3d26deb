package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/store"
)

func claim(t *testing.T, s *store.Store, tx *sql.Tx, sub, id string, want bool) {
	eng := store.EngineOf(s)
	t.Helper()
	got, err := eng.InboxClaim(context.Background(), tx, sub, id)
	if err != nil {
		t.Fatalf("ClaimInbox(%s, %s): %v", sub, id, err)
	}
	if got != want {
		t.Fatalf("ClaimInbox(%s, %s) = %v, want %v", sub, id, got, want)
	}
}

func (h *harness) inboxClaim(t *testing.T) {
	s := h.open(t)
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", true)
		claim(t, s, tx, "billing.orders", "e1", false) // same transaction
		claim(t, s, tx, "billing.orders", "e2", true)
	})
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", false) // redelivery
		claim(t, s, tx, "shipping.orders", "e1", true) // another subscription
		claim(t, s, tx, "billing.orders", "E1", true)  // ids are case-sensitive
	})
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e2", false)
		claim(t, s, tx, "shipping.orders", "e1", false)
	})
}

// inboxClaimBatch claims many ids in one statement: the same rows and
// answers as one InboxClaim after another, in order.
func (h *harness) inboxClaimBatch(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	batch := func(tx *sql.Tx, sub string, ids []string, want []bool) {
		t.Helper()
		got, err := eng.InboxClaimMany(ctx, tx, sub, ids)
		if err != nil {
			t.Fatalf("ClaimInboxBatch(%s, %v): %v", sub, ids, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ClaimInboxBatch(%s, %v) = %v, want %v", sub, ids, got, want)
		}
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e2", true)
		// e1 twice in one batch: the second copy is a duplicate; e2 was
		// claimed earlier in the transaction.
		batch(tx, "billing.orders", []string{"e3", "e1", "e2", "e1", "e4"}, []bool{true, true, false, false, true})
		batch(tx, "billing.orders", nil, []bool{})
	})
	commit(t, s, func(tx *sql.Tx) {
		batch(tx, "billing.orders", []string{"e1", "e5", "e4"}, []bool{false, true, false})
		batch(tx, "shipping.orders", []string{"e1", "E1", `"quoted" \\ id`}, []bool{true, true, true})
		claim(t, s, tx, "billing.orders", "e5", false)
	})
	rollback(t, s, func(tx *sql.Tx) { batch(tx, "billing.orders", []string{"e6", "e7"}, []bool{true, true}) })
	commit(t, s, func(tx *sql.Tx) {
		batch(tx, "billing.orders", []string{"e7", "e6", "e3"}, []bool{true, true, false})
		batch(tx, "shipping.orders", []string{`"quoted" \\ id`}, []bool{false})
	})
	// Many ids: one statement, whatever the batch size.
	ids := make([]string, 2000)
	want := make([]bool, len(ids))
	for i := range ids {
		ids[i] = fmt.Sprintf("big-%04d", i)
		want[i] = i%2 == 0
	}
	commit(t, s, func(tx *sql.Tx) {
		odd := make([]string, 0, len(ids)/2)
		for i := 1; i < len(ids); i += 2 {
			odd = append(odd, ids[i])
		}
		batch(tx, "big", odd, slicesRepeat(true, len(odd)))
		batch(tx, "big", ids, want)
	})
}

func slicesRepeat(v bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func (h *harness) inboxRollback(t *testing.T) {
	s := h.open(t)
	rollback(t, s, func(tx *sql.Tx) { claim(t, s, tx, "billing.orders", "e1", true) })
	commit(t, s, func(tx *sql.Tx) { claim(t, s, tx, "billing.orders", "e1", true) })
	commit(t, s, func(tx *sql.Tx) { claim(t, s, tx, "billing.orders", "e1", false) })
}

func (h *harness) inboxPrune(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "old", true)
		claim(t, s, tx, "shipping.orders", "old", true)
		claim(t, s, tx, "billing.orders", "new", true)
	})
	// InboxClaim stamps the current time; backdate two rows.
	if _, err := s.DB().Exec(s.Rebind("UPDATE herald_inbox SET processed_at = ? WHERE event_id = ?"),
		time.Now().Add(-48*time.Hour).UnixNano(), "old"); err != nil {
		t.Fatalf("backdate inbox rows: %v", err)
	}
	n, err := eng.InboxPrune(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatalf("PruneInbox: %v", err)
	}
	if n != 2 {
		t.Errorf("PruneInbox removed %d, want 2", n)
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "old", true) // pruned: claimable again
		claim(t, s, tx, "billing.orders", "new", false)
	})
	n, err = eng.InboxPrune(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 2 {
		t.Errorf("PruneInbox(future) = %d, %v; want 2", n, err)
	}
}

func (h *harness) inboxRelease(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", true)
		claim(t, s, tx, "shipping.orders", "e1", true)
	})
	if err := eng.InboxRelease(ctx, "billing.orders", "e1"); err != nil {
		t.Fatalf("ReleaseInbox: %v", err)
	}
	if err := eng.InboxRelease(ctx, "billing.orders", "never-claimed"); err != nil {
		t.Fatalf("ReleaseInbox of an unclaimed event: %v", err)
	}
	commit(t, s, func(tx *sql.Tx) {
		claim(t, s, tx, "billing.orders", "e1", true)   // released: runs again
		claim(t, s, tx, "shipping.orders", "e1", false) // other subscription untouched
	})
}
