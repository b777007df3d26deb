package herald_test

import (
	"context"
	"fmt"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
)

// slowCounter answers broker.PendingStater and broker.PendingCounter only
// when its ctx ends, as a broker that does not answer before the service
// stops; asked tells when the first question came.
type slowCounter struct {
	*natsjs.Broker
	once  sync.Once
	asked chan struct{}
}

func (c *slowCounter) Pending(ctx context.Context, _ broker.Subscription) (int, error) {
	c.once.Do(func() { close(c.asked) })
	<-ctx.Done()
	return 0, fmt.Errorf("pending: %w", ctx.Err())
}

// ClaimsInOrder is false: a subscription the broker claims in order
// (natsjs does) never holds, so it would never ask.
func (c *slowCounter) ClaimsInOrder(broker.Subscription) bool { return false }

func (c *slowCounter) PendingState(ctx context.Context, sub broker.Subscription) (broker.PendingState, error) {
	_, err := c.Pending(ctx, sub)
	return broker.PendingState{}, err
}

// TestStoppingDoesNotLogItsOwnCancellation: a subscription that is asking
// the broker how many events are unacknowledged when the service closes
// fails with "context canceled"; that is Close at work, not news, so it
// is not logged. (It was, at Info, on every shutdown: "subscription
// recovering: cannot count unacknowledged events ... context canceled".)
func TestStoppingDoesNotLogItsOwnCancellation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	br := &slowCounter{Broker: b, asked: make(chan struct{})}
	svc, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(br), herald.WithLogger(log))
	must(t, err)
	must(t, herald.Subscribe(svc, orderStepped, "ship", func(context.Context, herald.Tx, stepped) error { return nil }))
	must(t, svc.Start(ctx))
	<-br.asked // Start's subscription is counting
	must(t, svc.Close())
	if l := logs.String(); strings.Contains(l, "context canceled") || strings.Contains(l, "cannot count") {
		t.Errorf("Close logged its own cancellation:\n%s", l)
	}
}
