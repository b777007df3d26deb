package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestCallsWhileTheServerIsDownSayItIsUnreachable: with the server gone and
// the connection reconnecting, a publish, a catalog heartbeat, a trace
// append and a pending count or state fail with an error that says the
// server is unreachable and wraps broker.ErrTransient — not with nats.go's
// "nats: outbound buffer limit exceeded", which is what a down server
// looked like.
func TestCallsWhileTheServerIsDownSayItIsUnreachable(t *testing.T) {
	srv := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"))
	b := connect(t, srv.URL(), WithReconnectWait(50*time.Millisecond))
	ctx := testCtx(t, 30*time.Second)
	sub := broker.Subscription{Service: "shipping", Name: "ship", Types: []string{"shop.order.placed"}, Kind: envelope.KindIntegration}
	if err := b.Provision(ctx, broker.Topology{Service: "shipping", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	testwait.UntilReport(t, 20*time.Second, func() bool { return b.nc.Status() == nats.RECONNECTING },
		func() string {
			return fmt.Sprintf("connection %v after the server closed, want RECONNECTING", b.nc.Status())
		})
	// Each call gets its own deadline: the catalog's first heartbeat
	// creates its bucket, retrying for as long as ctx lets it.
	call := func(fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return fn(ctx)
	}
	for name, err := range map[string]error{
		"publish":   call(func(ctx context.Context) error { return b.Publish(ctx, bulk("shop.order.placed", 1))[0] }),
		"heartbeat": call(func(ctx context.Context) error { return b.Heartbeat(ctx, "orders", "i1", []byte("{}")) }),
		"trace":     call(func(ctx context.Context) error { return b.AppendTrace(ctx, "orders", []byte("x")) }),
		"pending": call(func(ctx context.Context) error {
			_, err := b.Pending(ctx, sub)
			return err
		}),
		"pending state": call(func(ctx context.Context) error {
			_, err := b.PendingState(ctx, sub)
			return err
		}),
	} {
		switch {
		case err == nil:
			t.Errorf("%s with the server down: no error", name)
		case !errors.Is(err, broker.ErrTransient) || !strings.Contains(err.Error(), "NATS server is unreachable"):
			t.Errorf("%s with the server down: %v, want a transient error saying the server is unreachable", name, err)
		case strings.Contains(err.Error(), "outbound buffer"):
			t.Errorf("%s with the server down: %v still speaks of the outbound buffer", name, err)
		default:
			t.Logf("%s: %v", name, err)
		}
	}
}
