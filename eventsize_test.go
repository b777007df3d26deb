package herald_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/testdb"
)

// An order as the shop takes it: the customer id is the user's input.
type bigOrder struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
}

type bigNote struct {
	To   string `json:"to"`
	Body string `json:"body"`
}

var (
	bigOrderPlaced    = herald.Domain[bigOrder]("orders.big-order-placed")
	bigOrderConfirmed = herald.Integration[bigOrder]("shop.big-order.confirmed",
		herald.KeyBy(func(o bigOrder) string { return o.OrderID }))
	bigNotice = herald.Notification[bigNote]("shop.big-notice")
)

// TestRecordRefusesEventOverBrokerLimit: a 175,000-'<' customer id is a 175
// KB body, but JSON escapes '<' as \u003c, so its integration event is over
// the broker's 1 MiB max payload. Do refuses it with an error naming the
// contract, the size and the limit, before and after Start, and commits
// nothing; a Notify over the limit likewise.
func TestRecordRefusesEventOverBrokerLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(quiet))
	must(t, err)
	defer b.Close()
	st := testdb.SQLite(t)
	_, err = st.DB().Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL)`)
	must(t, err)
	svc, err := herald.New("orders", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet))
	must(t, err)
	defer svc.Close()
	must(t, herald.Translate(svc, bigOrderPlaced, bigOrderConfirmed, func(_ context.Context, o bigOrder) (bigOrder, error) { return o, nil }))
	must(t, svc.Register(bigNotice))
	place := func(id, customer string) error {
		return svc.Do(ctx, func(tx herald.Tx) error {
			if _, err := tx.SQL().ExecContext(ctx, `INSERT INTO orders (id, customer_id) VALUES (?, ?)`, id, customer); err != nil {
				return err
			}
			return herald.Record(tx, bigOrderPlaced, bigOrder{OrderID: id, CustomerID: customer})
		})
	}
	counts := func() [3]int {
		return [3]int{testdb.Count(t, st, "orders", ""), testdb.Count(t, st, "herald_event_log", ""), testdb.Count(t, st, "herald_outbox", "")}
	}
	huge := strings.Repeat("<", 175_000)
	limit := b.MaxEventSize()
	if limit != 1<<20 {
		t.Fatalf("MaxEventSize = %d, want the server's default 1 MiB", limit)
	}
	check := func(when string, err error) {
		t.Helper()
		if !errors.Is(err, herald.ErrEventTooLarge) {
			t.Fatalf("%s: Do = %v, want ErrEventTooLarge", when, err)
		}
		var tl *herald.EventTooLargeError
		if !errors.As(err, &tl) {
			t.Fatalf("%s: %v is no *EventTooLargeError", when, err)
		}
		if tl.Type != bigOrderConfirmed.Name() || tl.Version != 1 || tl.Limit != limit || tl.Size <= limit || tl.Size < 6*175_000 {
			t.Errorf("%s: %+v, want %s v1, a size over %d", when, *tl, bigOrderConfirmed.Name(), limit)
		}
		for _, want := range []string{`"shop.big-order.confirmed"`, strconv.Itoa(tl.Size), strconv.Itoa(limit)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %s", when, err, want)
			}
		}
	}
	before := counts()
	check("before Start", place("o-huge", huge))
	must(t, svc.Start(ctx))
	check("after Start", place("o-huge", huge))
	if got := counts(); got != before {
		t.Fatalf("rows (orders, event log, outbox) = %v after the refused orders, want %v: nothing committed", got, before)
	}
	// An order of a reasonable size still goes through.
	must(t, place("o-small", strings.Repeat("<", 1000)))
	if got := counts(); got != [3]int{1, 1, 1} {
		t.Fatalf("rows after a small order = %v, want one of each", got)
	}
	err = svc.Do(ctx, func(tx herald.Tx) error {
		return herald.Notify(tx, bigNotice, bigNote{To: "c-1", Body: strings.Repeat("x", limit)})
	})
	if !errors.Is(err, herald.ErrEventTooLarge) || !strings.Contains(err.Error(), `"shop.big-notice"`) {
		t.Fatalf("Notify over the limit: %v, want ErrEventTooLarge naming shop.big-notice", err)
	}
}

// TestHandlerEventTooLargeIsPermanent: a subscription handler whose
// notification is too large for the broker fails the same way on every
// attempt, so its event is dead-lettered at the first one instead of
// holding its key through every retry.
func TestHandlerEventTooLargeIsPermanent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sys := heraldtest.New(t)
	b := sys.Broker()
	prod, err := herald.New("orders", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet), sys.Observe())
	must(t, err)
	must(t, herald.Translate(prod, bigOrderPlaced, bigOrderConfirmed, func(_ context.Context, o bigOrder) (bigOrder, error) { return o, nil }))
	cons, err := herald.New("shipping", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(b), herald.WithLogger(quiet),
		herald.Retry(herald.RetryPolicy{MaxAttempts: 5, BaseDelay: time.Second, MaxDelay: time.Second}), sys.Observe())
	must(t, err)
	must(t, cons.Register(bigNotice))
	limit := b.MaxEventSize()
	must(t, herald.Subscribe(cons, bigOrderConfirmed, "notify", func(ctx context.Context, tx herald.Tx, o bigOrder) error {
		return herald.Notify(tx, bigNotice, bigNote{To: o.CustomerID, Body: strings.Repeat("x", limit)})
	}))
	must(t, prod.Start(ctx))
	defer prod.Close()
	must(t, cons.Start(ctx))
	defer cons.Close()
	sys.Add(prod, cons)
	// The flow settles once shipping handled or dead-lettered the event.
	flow := sys.Run(t, func(ctx context.Context) error {
		return prod.Do(ctx, func(tx herald.Tx) error {
			return herald.Record(tx, bigOrderPlaced, bigOrder{OrderID: "o-1", CustomerID: "c-1"})
		})
	})
	dls, err := cons.DeadLetters(ctx, herald.DeadLetterFilter{})
	must(t, err)
	if len(flow.DeadLetters) != 1 || len(dls) != 1 || dls[0].Reason != "permanent" || dls[0].Attempts != 1 || !strings.Contains(dls[0].LastError, "over the broker's limit") {
		t.Fatalf("dead letters %+v, want one, permanent after 1 attempt, naming the size", dls)
	}
}

// TestRecordRefusesAKeyThatCannotTravel: a partition key that is not UTF-8,
// or longer than a header takes, is refused at Record, not parked later by
// the relay with its key held.
func TestRecordRefusesAKeyThatCannotTravel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, err := herald.New("orders", herald.WithStore(testdb.SQLite(t)), herald.WithLogger(quiet))
	must(t, err)
	defer svc.Close()
	must(t, herald.Translate(svc, bigOrderPlaced, bigOrderConfirmed, func(_ context.Context, o bigOrder) (bigOrder, error) { return o, nil }))
	for _, key := range []string{"o-\xff", strings.Repeat("k", 5000)} {
		err := svc.Do(ctx, func(tx herald.Tx) error {
			return herald.Record(tx, bigOrderPlaced, bigOrder{OrderID: key})
		})
		if !errors.Is(err, herald.ErrEncode) || !errors.Is(err, envelope.ErrInvalid) || !strings.Contains(err.Error(), "partitionkey") {
			t.Errorf("key of %d bytes: Do = %v, want ErrEncode naming the partition key", len(key), err)
		}
	}
	if n := testdb.Count(t, svc.Store(), "herald_outbox", ""); n != 0 {
		t.Fatalf("%d outbox rows after refused keys", n)
	}
}
