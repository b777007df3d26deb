package herald

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/faulthook"
	"github.com/heraldhq/herald/internal/janitor"
	"github.com/heraldhq/herald/internal/relay"
	"github.com/heraldhq/herald/store"
)

// Service is one microservice's herald runtime: its contracts, its domain
// handlers and translations, its transactions, and (once started) its outbox
// relay and subscriptions.
type Service struct {
	name   string
	engine *store.Engine // cfg.store (the users' side, Store()), for the engines
	log    *slog.Logger
	reg    *Registry
	cfg    config
	obs    *observerHub

	mu           sync.RWMutex // guards the registrations below
	handlers     map[Contract][]domainHandler
	translations map[Contract][]translation
	notifies     map[Contract]bool
	subs         []*subscription
	upcasters    map[upcastKey]upcaster
	aggregates   map[string]*aggBase    // by name
	adminExtra   []broker.AdminEndpoint // admin endpoints of the packages built on herald (adminhook)

	life    sync.Mutex // guards closed, started and the run state
	closed  bool
	started bool
	inDo    sync.WaitGroup
	run     *runState // non-nil while started

	outbox atomic.Pointer[relay.Relay] // the outbox relay, once started: commits wake it

	limiter  broker.Limiter // the broker's, if it limits event sizes
	maxEvent atomic.Int64   // the largest event it accepts (0: no limit known)

	schemas schemaCache // contracts' JSON Schemas, for events of producers that are not herald services
}

// config is what the options set; the service keeps it, and its store and
// broker nowhere else.
type config struct {
	store           *store.Store  // WithStore
	broker          broker.Broker // WithBroker, nil without one
	log             *slog.Logger
	retention       time.Duration
	maxDepth        int
	relay           RelayConfig
	retry           RetryPolicy
	inboxRetention  time.Duration
	outboxRetention time.Duration
	observers       []Observer
	traceContext    TraceContextFunc
	version         string           // the service's version, for its manifest
	faults          faulthook.Faults // heraldtest's checker (faulthook.With); nil in production
}

// WithStore sets the service's store (required). The caller keeps ownership:
// Close does not close it.
func WithStore(s *store.Store) Option {
	return serviceOption(func(c *config) error {
		if s == nil {
			return fmt.Errorf("%w: nil store", ErrInvalidOption)
		}
		c.store = s
		return nil
	})
}

// WithBroker sets the transport integration and notification events travel
// on. Without one, the service records domain events and fills its outbox,
// but Start refuses to relay or subscribe.
func WithBroker(b broker.Broker) Option {
	return serviceOption(func(c *config) error {
		if b == nil {
			return fmt.Errorf("%w: nil broker", ErrInvalidOption)
		}
		c.broker = b
		return nil
	})
}

// WithLogger sets the logger (default slog.Default()). The service adds
// service=<name> to every line it logs, so l should not carry that
// attribute already (it would appear twice); a process that runs one service
// labels the loggers of its other parts (the broker's, say) instead.
func WithLogger(l *slog.Logger) Option {
	return serviceOption(func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		c.log = l
		return nil
	})
}

// WithEventLogRetention keeps domain events in the event log for d (default
// 30 days); a started service prunes older ones. 0 keeps them forever. The
// events of event-sourced aggregates' streams are their state: retention
// never deletes them.
func WithEventLogRetention(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: event log retention %v < 0", ErrInvalidOption, d)
		}
		c.retention = d
		return nil
	})
}

// WithMaxDepth bounds how deeply domain handlers may record events that
// trigger handlers that record events (default 32).
func WithMaxDepth(n int) Option {
	return serviceOption(func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: max depth %d < 1", ErrInvalidOption, n)
		}
		c.maxDepth = n
		return nil
	})
}

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// New returns a service named name (lower-case letters, digits, '-' and '_',
// starting with a letter). WithStore is required.
func New(name string, opts ...Option) (*Service, error) {
	if !serviceName.MatchString(name) {
		return nil, fmt.Errorf("%w: service name %q: want lower-case letters, digits, '-' or '_', starting with a letter, at most 63",
			ErrInvalidOption, name)
	}
	c := config{
		log:             slog.Default(),
		retention:       30 * 24 * time.Hour,
		maxDepth:        32,
		retry:           defaultRetryPolicy(),
		inboxRetention:  7 * 24 * time.Hour,
		outboxRetention: time.Hour,
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: service %s: nil option", ErrInvalidOption, name)
		}
		if err := o.applyService(&c); err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
	}
	if c.store == nil {
		return nil, fmt.Errorf("%w: service %s has no store: pass herald.WithStore(sqlite.Open(...))", ErrInvalidOption, name)
	}
	s := &Service{
		name:         name,
		engine:       store.EngineOf(c.store),
		log:          c.log.With("service", name),
		reg:          NewRegistry(),
		cfg:          c,
		obs:          newObserverHub(c.log.With("service", name), c.observers),
		handlers:     map[Contract][]domainHandler{},
		translations: map[Contract][]translation{},
		notifies:     map[Contract]bool{},
		aggregates:   map[string]*aggBase{},
	}
	s.limiter, _ = c.broker.(broker.Limiter)
	s.learnLimit() // so that Do applies it before Start too
	return s, nil
}

// Name is the service's name, the Source of every event it records.
func (s *Service) Name() string { return s.name }

// Store is the service's store.
func (s *Service) Store() *store.Store { return s.cfg.store }

// Registry is the service's contract registry.
func (s *Service) Registry() *Registry { return s.reg }

// Register declares contracts the service uses without a handler or
// translation (say, a domain event kept only for the audit trail).
func (s *Service) Register(cs ...Contract) error {
	if err := s.reg.Register(cs...); err != nil {
		return fmt.Errorf("service %s: %w", s.name, err)
	}
	return nil
}

// enter registers an in-flight Do; it fails once the service is closed.
func (s *Service) enter() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return fmt.Errorf("%w: %s", ErrClosed, s.name)
	}
	s.inDo.Add(1)
	return nil
}

// PruneEventLog deletes event-log entries older than the retention now and
// returns how many it removed. It keeps the events of aggregates' streams.
func (s *Service) PruneEventLog(ctx context.Context) (int64, error) {
	return janitor.PruneEventLog(ctx, s.engine, s.cfg.retention, time.Now())
}
