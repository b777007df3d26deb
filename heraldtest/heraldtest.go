package heraldtest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
)

// EnvPostgres names the variable that, when set to a PostgreSQL URL, makes
// New give every service a fresh schema on that server instead of an SQLite
// file.
const EnvPostgres = testdb.EnvPostgres

// DefaultSettleTimeout is how long Run waits for a flow to settle unless
// SettleTimeout says otherwise.
const DefaultSettleTimeout = 20 * time.Second

// Option configures New.
type Option func(*config) error

type config struct {
	settle time.Duration
}

// SettleTimeout sets how long Run waits for a flow to settle before it
// fails the test (default DefaultSettleTimeout).
func SettleTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("heraldtest: SettleTimeout %v: want > 0", d)
		}
		c.settle = d
		return nil
	}
}

// System is one test's herald system: an embedded NATS JetStream server,
// the services the test adds to it, each on a store of its own, and the
// observer that lets Run tell when a flow has settled. Everything it holds
// is closed when the test ends.
type System struct {
	t       testing.TB
	cfg     config
	broker  *natsjs.Broker
	tracker *tracker
	log     *slog.Logger // the test's log

	mu       sync.Mutex // guards services and their started
	services []*entry   // in the order Service added them
}

// entry is one service of the system.
type entry struct {
	svc     *herald.Service
	started bool // by Start, or by its caller (Add)
}

// New returns a system for the test t: an ephemeral embedded NATS
// JetStream server (its files in a temporary directory), closed, with every
// service of the system, when t ends. The broker and the services log to
// t's log (t.Log), which go test shows for a failed test or with -v.
func New(t testing.TB, opts ...Option) *System {
	t.Helper()
	cfg := config{settle: DefaultSettleTimeout}
	for _, o := range opts {
		if o == nil {
			t.Fatalf("heraldtest.New: nil option")
		}
		if err := o(&cfg); err != nil {
			t.Fatalf("heraldtest.New: %v", err)
		}
	}
	log := newTestLogger(t)
	b, err := natsjs.Embedded(context.Background(), natsjs.WithEphemeral(), natsjs.WithLogger(log))
	if err != nil {
		t.Fatalf("heraldtest.New: embedded NATS: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Logf("heraldtest: close broker: %v", err)
		}
	})
	return &System{t: t, cfg: cfg, broker: b, tracker: newTracker(), log: log}
}

// Broker is the system's embedded NATS JetStream broker.
func (s *System) Broker() *natsjs.Broker { return s.broker }

// Postgres reports whether the system's services run on PostgreSQL
// (EnvPostgres is set) rather than SQLite.
func (s *System) Postgres() bool { return testdb.PostgresEnabled() }

// Service adds the service name to the system and returns it, not yet
// started: register its contracts, handlers, translations and
// subscriptions, create its tables (svc.Store()), then call Start. It runs
// on a store of its own — a new SQLite file in a temporary directory, or a
// new schema on the PostgreSQL server of EnvPostgres, dropped when the test
// ends — and on the system's broker, observed by the system. opts are
// passed to herald.New after those (WithStore, WithBroker, WithObserver,
// and WithLogger of the test's log), so they may add observers, replace the
// logger, set a retry policy.
func (s *System) Service(name string, opts ...herald.Option) *herald.Service {
	s.t.Helper()
	s.mu.Lock()
	twice := slices.ContainsFunc(s.services, func(e *entry) bool { return e.svc.Name() == name })
	s.mu.Unlock()
	if twice {
		s.t.Fatalf("heraldtest: service %q added twice", name)
	}
	st := newStore(s.t)
	all := append([]herald.Option{herald.WithStore(st), herald.WithBroker(s.broker),
		herald.WithObserver(s.tracker), herald.WithLogger(s.log)}, opts...)
	svc, err := herald.New(name, all...)
	if err != nil {
		s.t.Fatalf("heraldtest: service %s: %v", name, err)
	}
	s.mu.Lock()
	s.services = append(s.services, &entry{svc: svc})
	s.mu.Unlock()
	s.t.Cleanup(func() { // registered after the store's cleanup, so it runs before it
		if err := svc.Close(); err != nil {
			s.t.Logf("heraldtest: close %s: %v", svc.Name(), err)
		}
	})
	return svc
}

// Observe returns the option that lets the system follow a service built
// elsewhere — by a constructor of your own that calls herald.New, on a
// broker and store it chose. Pass it to herald.New, then Add the service.
func (s *System) Observe() herald.Option { return herald.WithObserver(s.tracker) }

// Add makes the system know services built elsewhere with Observe among
// their options, so that Run waits for their subscriptions too. Their
// caller keeps them: it starts and closes them, and Start skips them.
func (s *System) Add(svcs ...*herald.Service) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range svcs {
		if slices.ContainsFunc(s.services, func(e *entry) bool { return e.svc.Name() == svc.Name() }) {
			s.t.Fatalf("heraldtest: service %q added twice", svc.Name())
			return
		}
		s.services = append(s.services, &entry{svc: svc, started: true})
	}
}

// Start starts the named services of the system, or, with no names, every
// service not started yet. Every service is closed when the test ends,
// started or not. A name the
// system has no service of fails the test.
func (s *System) Start(names ...string) {
	s.t.Helper()
	s.mu.Lock()
	var todo []*entry
	for _, n := range names {
		i := slices.IndexFunc(s.services, func(e *entry) bool { return e.svc.Name() == n })
		if i < 0 {
			s.mu.Unlock()
			s.t.Fatalf("heraldtest: Start %q: no such service (add it with Service)", n)
			return
		}
		todo = append(todo, s.services[i])
	}
	if len(names) == 0 {
		todo = slices.Clone(s.services)
	}
	s.mu.Unlock()
	for _, e := range todo {
		s.mu.Lock()
		started := e.started
		s.mu.Unlock()
		if started {
			continue
		}
		if err := e.svc.Start(context.Background()); err != nil {
			s.t.Fatalf("heraldtest: start %s: %v", e.svc.Name(), err)
			return
		}
		s.mu.Lock()
		e.started = true
		s.mu.Unlock()
	}
}

// subscribers maps each event type to the subscriptions of the system's
// services that receive it, from their manifests.
func (s *System) subscribers(t testing.TB) map[string][]subscriber {
	t.Helper()
	s.mu.Lock()
	services := slices.Clone(s.services)
	s.mu.Unlock()
	out := map[string][]subscriber{}
	for _, e := range services {
		m, err := e.svc.Manifest()
		if err != nil {
			t.Fatalf("heraldtest: %v", err)
		}
		for _, sub := range m.Subscriptions {
			out[sub.Event] = append(out[sub.Event], subscriber{service: m.Service, name: sub.Name})
		}
	}
	return out
}
