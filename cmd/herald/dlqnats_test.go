package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/store/sqlite"
)

type cliOrder struct {
	OrderID string `json:"order_id"`
}

// TestDLQThroughTheBroker: herald dlq without --db asks the running
// service through the broker — list, show, a dry run, a replay, a purge —
// and says what to do when no instance answers.
func TestDLQThroughTheBroker(t *testing.T) {
	clearNATSEnv(t)
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	sys := heraldtest.New(t)
	placed := herald.Domain[cliOrder]("clitest.placed")
	confirmed := herald.Integration[cliOrder]("clitest.order.confirmed", herald.Version(1), herald.KeyBy(func(o cliOrder) string { return o.OrderID }))
	newService := func(name string) *herald.Service {
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		svc, err := herald.New(name, herald.WithStore(st), herald.WithBroker(b), sys.Observe())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.Close() })
		return svc
	}
	orders, shipping := newService("orders"), newService("shipping")
	var fixed atomic.Bool
	must(t, herald.Translate(orders, placed, confirmed, func(_ context.Context, o cliOrder) (cliOrder, error) { return o, nil }))
	must(t, herald.Subscribe(shipping, confirmed, "schedule", func(context.Context, herald.Tx, cliOrder) error {
		if !fixed.Load() {
			return herald.Permanent(errors.New("carrier refused"))
		}
		return nil
	}))
	must(t, orders.Start(ctx))
	must(t, shipping.Start(ctx))
	sys.Add(orders, shipping)
	for _, id := range []string{"o1", "o2"} {
		sys.Run(t, func(ctx context.Context) error {
			return orders.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, placed, cliOrder{id}) })
		})
	}
	base := []string{"--service", "shipping", "--server", b.URL()}

	out, err := runCLI(t, append([]string{"dlq", "list"}, base...)...)
	if err != nil || strings.Count(out, "permanent: carrier refused") != 2 {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "show", "1"}, base...)...)
	if err != nil || !strings.Contains(out, `"order_id": "o1"`) || !strings.Contains(out, `"ce-type": "clitest.order.confirmed"`) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"dlq", "replay", "--id", "1", "--dry-run"}, base...)...)
	if err != nil || !strings.Contains(out, "would replay 1 dead letters") {
		t.Fatalf("replay --dry-run: %v\n%s", err, out)
	}
	fixed.Store(true)
	flow := sys.Run(t, func(context.Context) error {
		out, err = runCLI(t, append([]string{"dlq", "replay", "--id", "1"}, base...)...)
		return err
	})
	if !strings.Contains(out, "replayed 1 dead letters") || len(flow.Handled("shipping", "schedule")) != 1 {
		t.Fatalf("replay: %s\n%s", out, flow)
	}
	out, err = runCLI(t, append([]string{"dlq", "purge", "--all"}, base...)...)
	if err != nil || !strings.Contains(out, "purged 1 dead letters") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	out, err = runCLI(t, "dlq", "list", "--service", "billing", "--server", b.URL())
	if err == nil || !strings.Contains(err.Error(), "no instance of service billing answers") || !strings.Contains(err.Error(), "--db FILE") {
		t.Fatalf("list of a service that does not run: %v\n%s", err, out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
