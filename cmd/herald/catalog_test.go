package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/internal/testdb"
)

type (
	paid struct {
		ID     string `json:"id"`
		Amount int    `json:"amount"`
	}
	// paidRetyped is paid with amount as a string: a breaking change.
	paidRetyped struct {
		ID     string `json:"id"`
		Amount string `json:"amount"`
	}
	charged  struct{ ID string }
	credited struct{ ID string }
)

var (
	paidV1   = herald.Integration[paid]("pay.payment.received")
	chargedE = herald.Domain[charged]("billing.charged")
	credit   = herald.Domain[credited]("ledger.credited")
)

// paymentServices builds billing (translates billing.charged to
// pay.payment.received) and ledger (subscribes, records ledger.credited).
func paymentServices(t *testing.T, opts ...herald.Option) (billing, ledger *herald.Service) {
	t.Helper()
	var err error
	billing, err = herald.New("billing", append([]herald.Option{herald.WithStore(testdb.SQLite(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err = herald.New("ledger", append([]herald.Option{herald.WithStore(testdb.SQLite(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := herald.Translate(billing, chargedE, paidV1, func(_ context.Context, c charged) (paid, error) { return paid{ID: c.ID}, nil }); err != nil {
		t.Fatal(err)
	}
	if err := herald.Subscribe(ledger, paidV1, "credit", func(context.Context, herald.Tx, paid) error { return nil }, herald.Emits(credit)); err != nil {
		t.Fatal(err)
	}
	return billing, ledger
}

func TestCatalogCommandReadsARunningSystem(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	billing, ledger := paymentServices(t, herald.WithBroker(b))
	for _, s := range []*herald.Service{billing, ledger} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	nats := []string{"--nats", b.URL()}

	out, err := runCLI(t, append([]string{"catalog"}, nats...)...)
	if err != nil {
		t.Fatalf("catalog: %v\n%s", err, out)
	}
	for _, want := range []string{"billing", "translates billing.charged → pay.payment.received v1",
		`subscribes pay.payment.received as "credit" (accepts v1) → records ledger.credited`, "1 instance(s) live"} {
		if !strings.Contains(out, want) {
			t.Errorf("catalog output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, append([]string{"catalog", "why", "charged"}, nats...)...)
	if err != nil || !strings.Contains(out, "ledger/credit receives it") || !strings.Contains(out, "records ledger.credited") {
		t.Errorf("catalog why charged: %v\n%s", err, out)
	}
	for _, format := range []string{"mermaid", "dot", "json", "asyncapi"} {
		out, err := runCLI(t, append([]string{"catalog", "--format", format}, nats...)...)
		if err != nil || !strings.Contains(out, "pay.payment.received") {
			t.Errorf("catalog --format %s: %v\n%s", format, err, out)
		}
	}
	if out, err := runCLI(t, append([]string{"catalog", "--format", "svg"}, nats...)...); err == nil || !strings.Contains(err.Error(), "svg") {
		t.Errorf("catalog --format svg: %v\n%s", err, out)
	}
	if out, err := runCLI(t, append([]string{"catalog", "why", "nothing.here"}, nats...)...); err == nil {
		t.Errorf("why of an unknown event succeeded:\n%s", out)
	}

	// A stopped service stays, stale, until it is forgotten.
	if err := ledger.Close(); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, append([]string{"catalog"}, nats...)...)
	if err != nil || !strings.Contains(out, "stale: no live instance") {
		t.Errorf("catalog after ledger stopped: %v\n%s", err, out)
	}
	if out, err := runCLI(t, append([]string{"catalog", "forget", "nobody"}, nats...)...); err == nil || !strings.Contains(err.Error(), "billing, ledger") {
		t.Errorf("forget of an unknown service: %v\n%s", err, out)
	}
	if out, err := runCLI(t, append([]string{"catalog", "forget", "ledger"}, nats...)...); err != nil {
		t.Fatalf("forget: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"catalog"}, nats...)...)
	if err != nil || strings.Contains(out, "ledger.credited") {
		t.Errorf("catalog after forget ledger: %v\n%s", err, out)
	}
}

func writeManifests(t *testing.T, path string, services ...*herald.Service) {
	t.Helper()
	var ms []catalog.Manifest
	for _, s := range services {
		m, err := s.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	data, err := json.Marshal(ms)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaCheckFailsOnABreakingChange(t *testing.T) {
	dir := t.TempDir()
	lock, before, after, bumped := filepath.Join(dir, "herald.lock.json"), filepath.Join(dir, "before.json"),
		filepath.Join(dir, "after.json"), filepath.Join(dir, "bumped.json")
	billing, ledger := paymentServices(t)
	writeManifests(t, before, billing, ledger)

	if out, err := runCLI(t, "schema", "check", "--lock", lock, "--from", before); err == nil {
		t.Fatalf("check without a lock file succeeded:\n%s", out)
	}
	if out, err := runCLI(t, "schema", "lock", "--lock", lock, "--from", before); err != nil || !strings.Contains(out, "1 contract version") {
		t.Fatalf("schema lock: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "schema", "check", "--lock", lock, "--from", before); err != nil || !strings.Contains(out, "ok:") {
		t.Fatalf("check of the locked contracts: %v\n%s", err, out)
	}

	// The same contract, version 1, with amount now a string.
	svc, err := herald.New("billing", herald.WithStore(testdb.SQLite(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Register(herald.Integration[paidRetyped]("pay.payment.received")); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, after, svc)
	out, err := runCLI(t, "schema", "check", "--lock", lock, "--from", after)
	if err == nil || !strings.Contains(err.Error(), `field "amount" changed type from integer to string`) {
		t.Fatalf("check of a retyped field: %v\n%s", err, out)
	}

	// The same change with the version bumped passes (v1 is gone, v2 is new).
	svc, err = herald.New("billing", herald.WithStore(testdb.SQLite(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Register(herald.Integration[paidRetyped]("pay.payment.received", herald.Version(2))); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, bumped, svc)
	out, err = runCLI(t, "schema", "check", "--lock", lock, "--from", bumped)
	if err != nil || !strings.Contains(out, "new version") {
		t.Fatalf("check with a bumped version: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "schema", "check", "--strict", "--lock", lock, "--from", bumped); err == nil {
		t.Fatalf("--strict passed with the lock behind the code:\n%s", out)
	}
}
