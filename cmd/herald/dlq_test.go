package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/sqlite"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestDLQCommands(t *testing.T) {
	db := filepath.Join(t.TempDir(), "shipping.db")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	e := &envelope.Envelope{ID: envelope.NewID(time.Now()), Type: "shop.order.confirmed", Version: 1, Kind: envelope.KindIntegration,
		Source: "orders", Time: time.Now(), DataContentType: "application/json", Data: []byte(`{"order_id":"o-1"}`)}
	h, body := envelope.ToBinary(e)
	for _, d := range []store.DeadLetter{
		{Service: "shipping", Subscription: "schedule", EventID: e.ID, Type: e.Type, Version: 1, Reason: store.ReasonExhausted, LastError: "db down", Attempts: 5, Header: h, Data: body},
		{Service: "shipping", Subscription: "schedule", Reason: store.ReasonMalformed, LastError: "bad specversion", Header: map[string]string{}, Data: []byte{0xff, 0x00}},
		{Service: "orders", Subscription: "track", Reason: store.ReasonPermanent, LastError: "other service", Header: map[string]string{}, Data: []byte("x")},
	} {
		if _, err := store.EngineOf(st).DeadLetterInsert(ctx, nil, d); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	base := []string{"--service", "shipping", "--db", db}

	out, err := runCLI(t, append([]string{"dlq", "list"}, base...)...)
	if err != nil || !strings.Contains(out, "exhausted") || !strings.Contains(out, "malformed") || strings.Contains(out, "other service") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "show", "1"}, base...)...)
	if err != nil || !strings.Contains(out, `"order_id": "o-1"`) || !strings.Contains(out, `"ce-type": "shop.order.confirmed"`) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "show", "3"}, base...)...) // belongs to orders
	if err == nil {
		t.Fatalf("show of another service's dead letter succeeded:\n%s", out)
	}
	out, err = runCLI(t, append([]string{"dlq", "replay", "--dry-run", "--reason", "exhausted"}, base...)...)
	if err != nil || !strings.Contains(out, "would replay 1 dead letters") {
		t.Fatalf("replay --dry-run: %v\n%s", err, out)
	}
	if _, err = runCLI(t, append([]string{"dlq", "replay", "--all", "--server", ""}, base...)...); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("replay with an empty --server: %v", err)
	}
	if _, err = runCLI(t, append([]string{"dlq", "purge"}, base...)...); err == nil || !strings.Contains(err.Error(), "--all") {
		t.Fatalf("purge without a filter: %v", err)
	}
	out, err = runCLI(t, append([]string{"dlq", "purge", "--reason", "malformed"}, base...)...)
	if err != nil || !strings.Contains(out, "purged 1 dead letters") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "list"}, base...)...)
	if err != nil || strings.Contains(out, "malformed") || !strings.Contains(out, "exhausted") {
		t.Fatalf("list after purge: %v\n%s", err, out)
	}
	if _, err = runCLI(t, "dlq", "list", "--service", "shipping"); err == nil || !strings.Contains(err.Error(), "--db") {
		t.Fatalf("list without a database: %v", err)
	}
	if _, err = runCLI(t, "dlq", "list", "--service", "shipping", "--db", filepath.Join(t.TempDir(), "missing.db")); err == nil || !strings.Contains(err.Error(), "missing.db") {
		t.Fatalf("list of a missing file: %v", err)
	}
}

// TestDLQProducerSide: the outbox rows a relay parked show as producer-side
// dead letters; replay puts them back into the outbox without a broker (the
// service's relay publishes them), purge discards them.
func TestDLQProducerSide(t *testing.T) {
	db := filepath.Join(t.TempDir(), "orders.db")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*envelope.Envelope
	for i := range 3 {
		evs = append(evs, &envelope.Envelope{ID: envelope.NewID(time.Now()), Type: "shop.order.confirmed", Version: 1,
			Kind: envelope.KindIntegration, Source: "orders", Key: "o-1", Time: time.Now(), DataContentType: "application/json",
			Data: []byte(`{"order_id":"o-1","n":` + strconv.Itoa(i) + `}`)})
	}
	tx, err := store.EngineOf(st).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EngineOf(st).OutboxAppend(ctx, tx, evs); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rows, err := store.EngineOf(st).OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 10})
	if err != nil || len(rows) != 3 {
		t.Fatalf("outbox: %d rows, %v", len(rows), err)
	}
	if _, err := store.EngineOf(st).OutboxPark(ctx, "orders", []store.Park{
		{Row: rows[0], Reason: store.ReasonRefused, LastError: "nats: maximum payload exceeded", Attempts: 1},
		{Row: rows[1], Reason: store.ReasonHeld, LastError: "held behind event " + evs[0].ID},
		{Row: rows[2], Reason: store.ReasonHeld, LastError: "held behind event " + evs[0].ID},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.EngineOf(st).DeadLetterInsert(ctx, nil, store.DeadLetter{Service: "orders", Subscription: "track", Reason: store.ReasonExhausted,
		LastError: "subscriber side", Header: map[string]string{}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	base := []string{"--service", "orders", "--db", db}

	out, err := runCLI(t, append([]string{"dlq", "list"}, base...)...)
	if err != nil || strings.Count(out, "(producer)") != 3 || !strings.Contains(out, "refused") || !strings.Contains(out, "maximum payload exceeded") ||
		!strings.Contains(out, "subscriber side") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "list", "--producer"}, base...)...)
	if err != nil || strings.Count(out, "(producer)") != 3 || strings.Contains(out, "subscriber side") {
		t.Fatalf("list --producer: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "show", "1"}, base...)...)
	if err != nil || !strings.Contains(out, `"side": "producer"`) || !strings.Contains(out, `"partition_key": "o-1"`) ||
		!strings.Contains(out, `"reason": "refused"`) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	// A replay of producer-side and subscriber-side ones needs the broker.
	if _, err = runCLI(t, append([]string{"dlq", "replay", "--all", "--server", ""}, base...)...); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("replay --all with an empty --server: %v", err)
	}
	// The producer-side ones alone replay without a broker.
	out, err = runCLI(t, append([]string{"dlq", "replay", "--producer"}, base...)...)
	if err != nil || !strings.Contains(out, "replayed 3 dead letters") {
		t.Fatalf("replay --producer: %v\n%s", err, out)
	}
	st, err = sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err = store.EngineOf(st).OutboxPendingList(ctx, store.OutboxPendingListParams{Service: "orders", Limit: 10})
	if err != nil || len(rows) != 3 {
		t.Fatalf("outbox after replay: %d rows, %v; want the 3 events back", len(rows), err)
	}
	for i, r := range rows {
		if r.Event.ID != evs[i].ID {
			t.Errorf("outbox row %d is %s, want %s (parked order)", i, r.Event.ID, evs[i].ID)
		}
	}
	out, err = runCLI(t, append([]string{"dlq", "list"}, base...)...)
	if err != nil || strings.Contains(out, "(producer)") || !strings.Contains(out, "subscriber side") {
		t.Fatalf("list after replay: %v\n%s", err, out)
	}
	// Parked again, then purged.
	if _, err := store.EngineOf(st).OutboxPark(ctx, "orders", []store.Park{{Row: rows[0], Reason: store.ReasonRefused, LastError: "again"}}); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, append([]string{"dlq", "purge", "--producer"}, base...)...)
	if err != nil || !strings.Contains(out, "purged 1 dead letters") {
		t.Fatalf("purge --producer: %v\n%s", err, out)
	}
	if keys, err := store.EngineOf(st).OutboxParkedKeys(ctx, "orders"); err != nil || len(keys) != 0 {
		t.Fatalf("parked keys after purge: %v, %v", keys, err)
	}
}
