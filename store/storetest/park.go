package storetest

import (
	"context"
	"database/sql"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
)

// keyed returns n events of service with key key, ids prefix-0000….
func keyed(service, prefix, key string, n int) []*envelope.Envelope {
	out := events(service, prefix, n)
	for _, e := range out {
		e.Key = key
	}
	return out
}

// parkRows parks rows with reason and checks that each became a dead
// letter; it returns their ids.
func parkRows(t *testing.T, s *store.Store, service, reason string, rows ...store.OutboxRow) []int64 {
	eng := store.EngineOf(s)
	t.Helper()
	ps := make([]store.Park, len(rows))
	for i, r := range rows {
		ps[i] = store.Park{Row: r, Reason: reason, LastError: "refused: " + r.Event.ID, Attempts: i + 1}
	}
	res, err := eng.OutboxPark(context.Background(), service, ps)
	if err != nil {
		t.Fatalf("ParkOutbox: %v", err)
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		if r.DeadLetter == 0 || r.Gone {
			t.Fatalf("ParkOutbox(%s) = %+v, want a dead letter", rows[i].Event.ID, r)
		}
		ids[i] = r.DeadLetter
	}
	return ids
}

func parkedKeys(t *testing.T, s *store.Store, service string) map[string]string {
	eng := store.EngineOf(s)
	t.Helper()
	keys, err := eng.OutboxParkedKeys(context.Background(), service)
	if err != nil {
		t.Fatalf("ParkedKeys: %v", err)
	}
	return keys
}

func producerSide(t *testing.T, s *store.Store, service string) []store.DeadLetter {
	t.Helper()
	dls, err := s.DeadLetterList(context.Background(), store.DeadLetterFilter{Service: service, ProducerSide: true})
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return dls
}

// parkOutbox: a parked row leaves the outbox and becomes a producer-side
// dead letter carrying the whole event; its key is held, a keyless one
// holds nothing, other services are untouched.
func (h *harness) parkOutbox(t *testing.T) {
	s := h.open(t)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	b := keyed("orders", "b", "k-b", 1)
	none := keyed("orders", "n", "", 1)
	other := keyed("billing", "o", "k-a", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], b[0], none[0], a[1], other[0]) })
	rows := pending(t, s, "orders", 100)
	ids := parkRows(t, s, "orders", store.ReasonRefused, rows[0], rows[2])
	checkPending(t, "after parking a[0] and the keyless event", pending(t, s, "orders", 100), []*envelope.Envelope{b[0], a[1]})
	checkPending(t, "other service", pending(t, s, "billing", 100), other)
	if got, want := parkedKeys(t, s, "orders"), map[string]string{"k-a": a[0].ID}; !maps.Equal(got, want) {
		t.Errorf("ParkedKeys = %v, want %v (a keyless event holds nothing)", got, want)
	}
	if got := parkedKeys(t, s, "billing"); len(got) != 0 {
		t.Errorf("ParkedKeys(billing) = %v, want none", got)
	}
	dls := producerSide(t, s, "orders")
	if got := dlIDs(dls); !slices.Equal(got, ids) {
		t.Fatalf("producer-side dead letters %v, want %v", got, ids)
	}
	for i, want := range []*envelope.Envelope{a[0], none[0]} {
		d := dls[i]
		if !d.ProducerSide() || d.Service != "orders" || d.EventID != want.ID || d.Type != want.Type || d.Version != want.Version ||
			d.Key != want.Key || d.Reason != store.ReasonRefused || d.LastError != "refused: "+want.ID || d.Attempts != i+1 {
			t.Errorf("dead letter %d = %+v, not the parked %s", d.ID, d, want.ID)
		}
		e, err := envelope.FromBinary(d.Header, d.Data)
		if err != nil {
			t.Fatalf("dead letter %d: FromBinary: %v", d.ID, err)
		}
		checkEnvelope(t, "parked event", want, e)
	}
	// The subscriber side does not see them as its own.
	if got, err := s.DeadLetterList(ctx, store.DeadLetterFilter{Subscription: "a"}); err != nil || len(got) != 0 {
		t.Errorf("DeadLetters(subscription a) = %v, %v; want none", got, err)
	}
}

// parkHeldOnlyWhileParked: a held row is parked only while its key has
// producer-side dead letters, including one parked earlier in the same call.
func (h *harness) parkHeldOnlyWhileParked(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 3)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	rows := pending(t, s, "orders", 100)
	res, err := eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[1], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0] != (store.ParkResult{}) {
		t.Fatalf("held row of a key with nothing parked: %+v, want it left in the outbox", res[0])
	}
	checkPending(t, "nothing parked", pending(t, s, "orders", 100), a)
	res, err = eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[0], Reason: store.ReasonRefused}, {Row: rows[1], Reason: store.ReasonHeld},
		{Row: rows[2], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.DeadLetter == 0 {
			t.Errorf("row %d: %+v, want parked", i, r)
		}
	}
	checkPending(t, "all parked", pending(t, s, "orders", 100), nil)
	dls := producerSide(t, s, "orders")
	if len(dls) != 3 || dls[0].Reason != store.ReasonRefused || dls[1].Reason != store.ReasonHeld || dls[2].EventID != a[2].ID {
		t.Fatalf("dead letters %+v, want a[0] refused, a[1] and a[2] held, in order", dls)
	}
	if got := parkedKeys(t, s, "orders"); got["k-a"] != a[0].ID {
		t.Errorf("ParkedKeys = %v, want k-a held by %s, the oldest", got, a[0].ID)
	}
	// Purging the key's dead letters frees it.
	if _, err := s.DeadLetterDeleteMany(ctx, store.DeadLetterFilter{Service: "orders", ProducerSide: true}); err != nil {
		t.Fatal(err)
	}
	if got := parkedKeys(t, s, "orders"); len(got) != 0 {
		t.Errorf("ParkedKeys after purge = %v, want none", got)
	}
}

// parkGone: a row no longer in the outbox is reported gone, not parked.
func (h *harness) parkGone(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	rows := pending(t, s, "orders", 100)
	parkRows(t, s, "orders", store.ReasonRefused, rows[0])
	res, err := eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[0], Reason: store.ReasonRefused}, {Row: rows[1], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Gone || res[0].DeadLetter != 0 || res[1].DeadLetter == 0 {
		t.Fatalf("ParkOutbox = %+v, want the parked row gone and the next one held", res)
	}
	if n := len(producerSide(t, s, "orders")); n != 2 {
		t.Errorf("%d dead letters, want 2", n)
	}
}

// parkReplay: replay puts the parked events back into the outbox in the
// order they were parked, moves the key's rows still waiting in the outbox
// behind them, deletes the dead letters and frees the key.
func (h *harness) parkReplay(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 4)
	b := keyed("orders", "b", "k-b", 2)
	none := keyed("orders", "n", "", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], b[0], a[1], none[0]) })
	rows := pending(t, s, "orders", 100)
	parkRows(t, s, "orders", store.ReasonRefused, rows[0], rows[3])
	parkRows(t, s, "orders", store.ReasonHeld, rows[2])
	// a[2] arrives and waits in the outbox (the relay has not parked it yet).
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[2], b[1]) })
	got, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{})
	if err != nil {
		t.Fatalf("ReplayParked: %v", err)
	}
	if ids := dlEventIDs(got); !slices.Equal(ids, envIDs([]*envelope.Envelope{a[0], none[0], a[1]})) {
		t.Fatalf("ReplayParked returned %v", ids)
	}
	checkPending(t, "after replay", pending(t, s, "orders", 100), []*envelope.Envelope{b[0], b[1], a[0], none[0], a[1], a[2]})
	if n := len(producerSide(t, s, "orders")); n != 0 {
		t.Errorf("%d producer-side dead letters left, want 0", n)
	}
	if got := parkedKeys(t, s, "orders"); len(got) != 0 {
		t.Errorf("ParkedKeys after replay = %v, want none", got)
	}
	if got, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{}); err != nil || len(got) != 0 {
		t.Errorf("second ReplayParked = %v, %v; want nothing", got, err)
	}
}

func dlEventIDs(ds []store.DeadLetter) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.EventID
	}
	return out
}

// parkReplayPart: replay takes a key's parked events together, whatever
// part of them the filter selects — putting back only the held one would
// let the refused one, parked again behind it, come out after it — and
// nothing of other services or of subscriptions.
func (h *harness) parkReplayPart(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	c := keyed("orders", "c", "k-c", 1)
	other := keyed("billing", "o", "k-a", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], a[1], c[0], other[0]) })
	rows := pending(t, s, "orders", 100)
	first := parkRows(t, s, "orders", store.ReasonRefused, rows[0])[0]
	held := parkRows(t, s, "orders", store.ReasonHeld, rows[1])[0]
	otherKey := parkRows(t, s, "orders", store.ReasonRefused, rows[2])[0]
	parkRows(t, s, "billing", store.ReasonRefused, pending(t, s, "billing", 100)...)
	sub := addDeadLetter(t, s, nil, deadLetter("orders", "track", "t", store.ReasonExhausted, 1))
	got, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{IDs: []int64{held, sub}})
	if err != nil || !slices.Equal(dlIDs(got), []int64{first, held}) {
		t.Fatalf("ReplayParked(held, subscriber's) = %v, %v; want k-a's chain %v", dlIDs(got), err, []int64{first, held})
	}
	checkPending(t, "after replaying k-a", pending(t, s, "orders", 100), a)
	if got := parkedKeys(t, s, "orders"); len(got) != 1 || got["k-c"] != c[0].ID {
		t.Errorf("ParkedKeys = %v, want only k-c held", got)
	}
	left, err := s.DeadLetterList(ctx, store.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 || left[0].ID != otherKey || left[2].ID != sub {
		t.Errorf("dead letters left %v, want orders' k-c, billing's and the subscriber's", dlIDs(left))
	}
}

// parkHeldAfterReplay: a held row the relay read before a replay moved it
// behind the replayed events is reported gone, so the relay does not
// publish that stale copy ahead of them.
func (h *harness) parkHeldAfterReplay(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	rows := pending(t, s, "orders", 100)
	parkRows(t, s, "orders", store.ReasonRefused, rows[0])
	if _, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{}); err != nil {
		t.Fatal(err)
	}
	res, err := eng.OutboxPark(ctx, "orders", []store.Park{{Row: rows[1], Reason: store.ReasonHeld}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Gone || res[0].DeadLetter != 0 {
		t.Fatalf("ParkOutbox(the stale held row) = %+v, want it gone", res[0])
	}
	checkPending(t, "after replay", pending(t, s, "orders", 100), a)
}

// parkRangeMarks: parking and replay work with the relay's range marks:
// a mark past parked rows covers only what is left, and replay moves only
// the rows after the newest mark (those before it were published).
func (h *harness) parkRangeMarks(t *testing.T) {
	s := h.open(t)
	eng := store.EngineOf(s)
	ctx := context.Background()
	a := keyed("orders", "a", "k-a", 4)
	b := keyed("orders", "b", "k-b", 2)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[0], b[0], a[1], b[1], a[2]) })
	rows := pending(t, s, "orders", 100)
	// a[0] was published (range mark up to it); a[1] refused, a[2] held; b
	// published past them.
	if err := eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: 0, UpTo: rows[1].Seq, At: t0}); err != nil {
		t.Fatal(err)
	}
	parkRows(t, s, "orders", store.ReasonRefused, rows[2])
	parkRows(t, s, "orders", store.ReasonHeld, rows[4])
	if err := eng.OutboxMarkUpTo(ctx, store.OutboxMarkUpToParams{Service: "orders", From: rows[1].Seq, UpTo: rows[4].Seq, At: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	checkPending(t, "after the mark past the parked rows", pending(t, s, "orders", 100), nil)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a[3]) })
	if _, err := eng.OutboxReplayParked(ctx, "orders", store.DeadLetterFilter{}); err != nil {
		t.Fatal(err)
	}
	checkPending(t, "after replay", pending(t, s, "orders", 100), a[1:])
	if n, _, err := s.OutboxStats(ctx, "orders"); err != nil || n != 3 {
		t.Errorf("OutboxStats backlog = %d, %v; want 3", n, err)
	}
}

// parkReopen: the held keys are in the database: another store on it (a
// restarted relay) knows them.
func (h *harness) parkReopen(t *testing.T) {
	open := h.c.NewDB(t)
	s := mustOpen(t, open)
	a := keyed("orders", "a", "k-a", 1)
	commit(t, s, func(tx *sql.Tx) { appendOutbox(t, s, tx, a...) })
	parkRows(t, s, "orders", store.ReasonRefused, pending(t, s, "orders", 100)...)
	s.Close()
	s2 := mustOpen(t, open)
	if got := parkedKeys(t, s2, "orders"); got["k-a"] != a[0].ID {
		t.Errorf("ParkedKeys after reopening = %v, want k-a held by %s", got, a[0].ID)
	}
}
