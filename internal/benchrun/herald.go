package benchrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Event is the benchmarks' event: about 512 bytes of JSON.
type Event struct {
	Key    string `json:"key"`
	Seq    int    `json:"seq"`
	SentNS int64  `json:"sent_ns,omitempty"` // when the latency clock started
	Blob   string `json:"blob"`
}

// Blob is 460 random hex characters: with the other fields an event of
// about 512 bytes of JSON.
func Blob() string {
	b := make([]byte, 230)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// keys is how many partition keys the events spread over.
const keys = 1000

// Dialects herald's store runs on.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// openStore opens a fresh store: a new SQLite file in the run's directory,
// or a new schema on the PostgreSQL server, dropped by the returned close.
func (r *runner) openStore(ctx context.Context, dialect, name string) (*store.Store, func(), error) {
	switch dialect {
	case SQLite:
		dir, err := r.subdir(name)
		if err != nil {
			return nil, nil, err
		}
		st, err := sqlite.Open(ctx, filepath.Join(dir, name+".db"))
		if err != nil {
			return nil, nil, fmt.Errorf("open sqlite: %w", err)
		}
		return st, func() { st.Close() }, nil
	case Postgres:
		if r.cfg.PostgresURL == "" {
			return nil, nil, fmt.Errorf("no PostgreSQL URL")
		}
		pc, err := pgx.ParseConfig(r.cfg.PostgresURL)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres URL: %w", err)
		}
		schema := fmt.Sprintf("herald_bench_%d", mrand.Uint64())
		admin := stdlib.OpenDB(*pc)
		if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			admin.Close()
			return nil, nil, fmt.Errorf("create schema: %w", err)
		}
		drop := func() {
			_, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			admin.Close()
		}
		u := r.cfg.PostgresURL
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		st, err := postgres.Open(ctx, u+sep+"search_path="+schema)
		if err != nil {
			drop()
			return nil, nil, fmt.Errorf("open postgres: %w", err)
		}
		return st, func() { st.Close(); drop() }, nil
	default:
		return nil, nil, fmt.Errorf("unknown dialect %q", dialect)
	}
}

// pipeline is a producer service translating a domain event into an
// integration event, and a consumer service subscribed to it, each on its
// own store, over one broker.
type pipeline struct {
	prod, cons *herald.Service
	prodStore  *store.Store
	recorded   *herald.DomainEvent[Event]
	closers    []func()
}

// pipelineSpec says how to build a pipeline.
type pipelineSpec struct {
	name     string // unique per broker: names the event type and services
	dialect  string
	broker   broker.Broker
	prodOpts []herald.Option
	handle   func(ctx context.Context, tx herald.Tx, e Event) error
	subOpts  []herald.SubscribeOption
}

func (r *runner) newPipeline(ctx context.Context, s pipelineSpec) (*pipeline, error) {
	p := &pipeline{}
	ok := false
	defer func() {
		if !ok {
			p.close()
		}
	}()
	prodStore, closeProd, err := r.openStore(ctx, s.dialect, s.name+"-producer")
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, closeProd)
	consStore, closeCons, err := r.openStore(ctx, s.dialect, s.name+"-consumer")
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, closeCons)
	p.prodStore = prodStore
	p.recorded = herald.Domain[Event]("bench." + s.name + ".recorded")
	out := herald.Integration[Event]("bench."+s.name+".event", herald.KeyBy(func(e Event) string { return e.Key }))
	p.prod, err = herald.New(s.name+"-producer", append([]herald.Option{herald.WithStore(prodStore), herald.WithBroker(s.broker), herald.WithLogger(r.cfg.Logger)}, s.prodOpts...)...)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() { p.prod.Close() })
	if err := herald.Translate(p.prod, p.recorded, out, func(_ context.Context, e Event) (Event, error) { return e, nil }); err != nil {
		return nil, err
	}
	p.cons, err = herald.New(s.name+"-consumer", herald.WithStore(consStore), herald.WithBroker(s.broker), herald.WithLogger(r.cfg.Logger))
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() { p.cons.Close() })
	if err := herald.Subscribe(p.cons, out, "sink", s.handle, s.subOpts...); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// close closes the services, then the stores, in reverse order of opening.
func (p *pipeline) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// waitFor waits until done is closed, the context ends, or limit passes.
func waitFor(ctx context.Context, done <-chan struct{}, limit time.Duration, what func() string) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("timed out after %v: %s", limit, what())
	}
}

// counter counts handled events and closes done at the target.
type counter struct {
	mu     sync.Mutex
	n      int
	target int
	done   chan struct{}
	bar    *Bar
}

func newCounter(target int, b *Bar) *counter {
	return &counter{target: target, done: make(chan struct{}), bar: b}
}

func (c *counter) inc() {
	c.mu.Lock()
	c.n++
	if c.n == c.target {
		close(c.done)
	}
	c.mu.Unlock()
	c.bar.Add(1)
}

// setTarget lowers the target to n (the events actually sent).
func (c *counter) setTarget(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.target = n
	if c.n >= n {
		select {
		case <-c.done:
		default:
			close(c.done)
		}
	}
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
