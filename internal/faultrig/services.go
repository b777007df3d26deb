package faultrig

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
)

// Placed is the producer's domain event: order number Index was placed.
type Placed struct {
	Index int `json:"index"`
}

// Event is the integration event: the Seq-th event of key Key.
type Event struct {
	Key   string `json:"key"`
	Seq   int    `json:"seq"`
	Index int    `json:"index"`
}

const (
	Events = 10000 // events per test
	Keys   = 100   // partition keys; Events is a multiple
	Sub    = "ship"
)

var (
	OrderPlaced    = herald.Domain[Placed]("orders.fault_placed")
	OrderConfirmed = herald.Integration[Event]("shop.fault.confirmed",
		herald.KeyBy(func(e Event) string { return e.Key }))
)

// Key maps order i to its key and its 1-based sequence number in that key.
func Key(i int) (string, int) { return fmt.Sprintf("k%03d", i%Keys), i/Keys + 1 }

// ---- the two services, shared by the subprocess roles and the tests ------------

// OpenStore opens a PostgreSQL store for a postgres:// DSN, else an SQLite one.
func OpenStore(ctx context.Context, dsn string) (*store.Store, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return postgres.Open(ctx, dsn, postgres.WithMaxOpenConns(8))
	}
	return sqlite.Open(ctx, dsn)
}

func execAll(ctx context.Context, st *store.Store, stmts ...string) error {
	for _, q := range stmts {
		if _, err := st.DB().ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// The producer's own table: one row per placed order, written with its event.
func ProducerSchema(ctx context.Context, st *store.Store) error {
	return execAll(ctx, st, `CREATE TABLE IF NOT EXISTS placed_orders (idx INTEGER PRIMARY KEY, event_key TEXT NOT NULL)`)
}

// The consumer's own tables. effects has no unique constraint, so a
// duplicate effect would show; gen is the consumer process (run) that
// committed the row. progress is the last seq taken per key; violations
// records every event that took effect out of its key's order.
func ConsumerSchema(ctx context.Context, st *store.Store) error {
	return execAll(ctx, st,
		`CREATE TABLE IF NOT EXISTS effects (event_key TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL, gen INTEGER NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS effects_event_id ON effects (event_id)`,
		`CREATE TABLE IF NOT EXISTS progress (event_key TEXT PRIMARY KEY, seq INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS violations (event_key TEXT NOT NULL, seq INTEGER NOT NULL, prev INTEGER NOT NULL, event_id TEXT NOT NULL, gen INTEGER NOT NULL)`,
	)
}

// Connect connects to the nats-server at url, reconnecting fast.
func Connect(ctx context.Context, url, name string, log *slog.Logger) (*natsjs.Broker, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return natsjs.Connect(ctx, []string{url}, natsjs.WithLogger(log), natsjs.WithName(name),
		natsjs.WithReconnectWait(100*time.Millisecond), natsjs.WithPublishTimeout(PublishTimeout))
}

// PublishTimeout bounds the wait for a publish acknowledgement that a
// server kill lost (the default, 30s, would only make the tests slower).
const PublishTimeout = 5 * time.Second

// NewProducer is the "orders" service: Do inserts the order row and
// records Placed, translated to OrderConfirmed keyed by order.
func NewProducer(st *store.Store, b broker.Broker, log *slog.Logger) (*herald.Service, error) {
	opts := []herald.Option{herald.WithStore(st), herald.WithLogger(log),
		// A killed producer's relay lease must expire before the restarted
		// one can relay; keep that short.
		herald.WithRelay(herald.RelayConfig{PollInterval: 100 * time.Millisecond, LeaseTTL: 2 * time.Second, MaxBackoff: time.Second})}
	if b != nil {
		opts = append(opts, herald.WithBroker(b))
	}
	svc, err := herald.New("orders", opts...)
	if err != nil {
		return nil, err
	}
	err = herald.Translate(svc, OrderPlaced, OrderConfirmed, func(ctx context.Context, p Placed) (Event, error) {
		k, s := Key(p.Index)
		return Event{Key: k, Seq: s, Index: p.Index}, nil
	})
	return svc, err
}

// PlaceOrders places orders from..to-1, perDo of them in each transaction
// (each with its row and its event). pace, if set, is slept between Dos.
func PlaceOrders(ctx context.Context, svc *herald.Service, st *store.Store, from, to, perDo int, pace time.Duration) error {
	ins := st.Rebind(`INSERT INTO placed_orders (idx, event_key) VALUES (?, ?)`)
	for i := from; i < to; i += perDo {
		err := svc.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+perDo, to); j++ {
				k, _ := Key(j)
				if _, err := tx.SQL().ExecContext(ctx, ins, j, k); err != nil {
					return err
				}
				if err := herald.Record(tx, OrderPlaced, Placed{Index: j}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("order %d: %w", i, err)
		}
		if pace > 0 {
			time.Sleep(pace)
		}
	}
	return nil
}

// WaitOutbox waits until the service's outbox backlog is 0.
func WaitOutbox(ctx context.Context, svc *herald.Service, timeout time.Duration) error {
	var n int64
	var age time.Duration
	var err error
	if testwait.For(timeout, "the outbox to drain", func() bool {
		n, age, err = svc.OutboxStats(ctx)
		return err == nil && n == 0
	}) != nil {
		return fmt.Errorf("outbox backlog %d (oldest %v, err %v) after %v", n, age, err, timeout)
	}
	return nil
}

// shipping is the consumer's handler state.
type shipping struct {
	st   *store.Store
	gen  int
	hook func(Event) // called for each event handled, if set
}

// handle checks the key's order against the consumer's own progress table
// and writes one effect row, all in herald's transaction (with its inbox row).
func (c *shipping) handle(ctx context.Context, tx herald.Tx, e Event) error {
	ev, _ := herald.EventFrom(ctx)
	if c.hook != nil {
		c.hook(e)
	}
	q := tx.SQL()
	prev := 0
	err := q.QueryRowContext(ctx, c.st.Rebind(`SELECT seq FROM progress WHERE event_key = ?`), e.Key).Scan(&prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if e.Seq != prev+1 {
		if _, err := q.ExecContext(ctx, c.st.Rebind(`INSERT INTO violations (event_key, seq, prev, event_id, gen) VALUES (?, ?, ?, ?, ?)`),
			e.Key, e.Seq, prev, ev.ID, c.gen); err != nil {
			return err
		}
	}
	if _, err := q.ExecContext(ctx, c.st.Rebind(`INSERT INTO progress (event_key, seq) VALUES (?, ?)
		ON CONFLICT (event_key) DO UPDATE SET seq = CASE WHEN excluded.seq > progress.seq THEN excluded.seq ELSE progress.seq END`),
		e.Key, e.Seq); err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, c.st.Rebind(`INSERT INTO effects (event_key, seq, event_id, gen) VALUES (?, ?, ?, ?)`), e.Key, e.Seq, ev.ID, c.gen)
	return err
}

// NewConsumer is the "shipping" service subscribed to
// OrderConfirmed. AckWait is short so that what a killed consumer held
// comes back soon.
func NewConsumer(st *store.Store, b broker.Broker, log *slog.Logger, gen int, hook func(Event)) (*herald.Service, error) {
	return NewConsumerWith(st, b, log, gen, hook, herald.AckWait(2*time.Second))
}

// NewConsumerWith is NewConsumer with the subscription's options
// given (none: herald's defaults).
func NewConsumerWith(st *store.Store, b broker.Broker, log *slog.Logger, gen int, hook func(Event), subOpts ...herald.SubscribeOption) (*herald.Service, error) {
	opts := []herald.Option{herald.WithStore(st), herald.WithLogger(log)}
	if b != nil {
		opts = append(opts, herald.WithBroker(b))
	}
	svc, err := herald.New("shipping", opts...)
	if err != nil {
		return nil, err
	}
	c := &shipping{st: st, gen: gen, hook: hook}
	return svc, herald.Subscribe(svc, OrderConfirmed, Sub, c.handle, subOpts...)
}
