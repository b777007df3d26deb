// Package shop runs the reference system — orders, shipping, notifications
// and reviews — in one process, each service with its own database and HTTP
// API on loopback, all on one broker. herald demo and the tests use it; each
// service also runs as its own process (examples/shop/<service>).
package shop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/examples/shop/service/notifications"
	"github.com/heraldhq/herald/examples/shop/service/orders"
	"github.com/heraldhq/herald/examples/shop/service/reviews"
	"github.com/heraldhq/herald/examples/shop/service/shipping"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/notify"
	"github.com/heraldhq/herald/notify/devbox"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config says where the system keeps its state and how it behaves.
type Config struct {
	// Broker carries the integration and notification events (required).
	Broker broker.Broker
	// DataDir holds one SQLite file per service (used unless Postgres is set).
	DataDir string
	// Postgres, when set, maps each service name to its own database URL.
	Postgres map[string]string
	// DispatchDelay is how long shipping waits before dispatching (default 200ms).
	DispatchDelay time.Duration
	// Logger (default: warnings and errors to slog.Default()). Each
	// service adds service=<name> to its lines: do not add it here.
	Logger *slog.Logger
	// Listen is the host the HTTP APIs listen on (default 127.0.0.1, random ports).
	Listen string
	// Senders deliver the notifications (default: a development mailbox
	// for e-mail and push, served at the notifications service's /mailbox/).
	Senders notifications.Senders
	// Notifications tunes the notification service.
	Notifications notifications.Config
	// Metrics, if set, observes every service and is served at /metrics on
	// each service's HTTP address, with Registry.
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry
	// Options are added to every service: observers such as a causal trace
	// recorder (trace.Recorder) and OpenTelemetry (tracing.Tracer.Options).
	Options []herald.Option
	// mailbox is the development mailbox behind the default senders.
	mailbox *devbox.Box
}

// System is the running shop.
type System struct {
	Orders        *orders.Service
	Shipping      *shipping.Service
	Notifications *notifications.Service
	Reviews       *reviews.Service
	// Mailbox holds what the default senders delivered (nil with Config.Senders).
	Mailbox *devbox.Box
	// Addr maps each service name to its HTTP address (host:port).
	Addr map[string]string

	stores  []*store.Store
	servers []*http.Server
	closers []func() error
}

// Services names the shop's services in start order.
var Services = []string{"orders", "shipping", "notifications", "reviews"}

// OpenStore opens the database of service as cfg says.
func OpenStore(ctx context.Context, cfg Config, service string) (*store.Store, error) {
	if url, ok := cfg.Postgres[service]; ok {
		return postgres.Open(ctx, url)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("shop: set DataDir or Postgres")
	}
	return sqlite.Open(ctx, filepath.Join(cfg.DataDir, service+".db"))
}

func (c Config) withDefaults() Config {
	if c.DispatchDelay == 0 {
		c.DispatchDelay = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1"
	}
	return c
}

// Start opens the databases, builds and starts the services and their HTTP
// APIs. Close stops everything.
func Start(ctx context.Context, cfg Config) (_ *System, err error) {
	if cfg.Broker == nil {
		return nil, errors.New("shop: Config.Broker is required")
	}
	cfg = cfg.withDefaults()
	if cfg.Senders.Email == nil {
		box, err := devbox.New(devbox.Capacity(100_000))
		if err != nil {
			return nil, err
		}
		cfg.mailbox = box
		cfg.Senders = notifications.Senders{Email: box.Sender(notify.Email), Push: box.Sender(notify.Push)}
	}
	s := &System{Addr: map[string]string{}, Mailbox: cfg.mailbox}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	open := func(name string) (*store.Store, error) {
		st, err := OpenStore(ctx, cfg, name)
		if err == nil {
			s.stores = append(s.stores, st)
		}
		return st, err
	}
	for _, name := range Services {
		st, err := open(name)
		if err != nil {
			return nil, err
		}
		svc, err := NewService(ctx, name, st, cfg)
		if err != nil {
			return nil, err
		}
		switch v := svc.(type) {
		case *orders.Service:
			s.Orders = v
		case *shipping.Service:
			s.Shipping = v
		case *reviews.Service:
			s.Reviews = v
		case *notifications.Service:
			s.Notifications = v
		case withMailbox:
			s.Notifications = v.Service
		}
		if err := svc.Start(ctx); err != nil {
			return nil, fmt.Errorf("shop: start %s: %w", name, err)
		}
		s.closers = append(s.closers, svc.Close)
		addr, err := s.serve(cfg.Listen+":0", cfg.withMetrics(svc.Handler()))
		if err != nil {
			return nil, fmt.Errorf("shop: %s HTTP: %w", name, err)
		}
		s.Addr[name] = addr
	}
	return s, nil
}

// Runner is one shop service.
type Runner interface {
	Start(context.Context) error
	Close() error
	Handler() http.Handler
}

// withMailbox serves the development mailbox beside the notifications API.
type withMailbox struct {
	*notifications.Service
	box *devbox.Box
}

func (w withMailbox) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/mailbox/", http.StripPrefix("/mailbox", w.box.Handler()))
	mux.Handle("/", w.Service.Handler())
	return mux
}

// NewService builds the shop service name on st.
func NewService(ctx context.Context, name string, st *store.Store, cfg Config) (Runner, error) {
	opts := []herald.Option{herald.WithBroker(cfg.Broker), herald.WithLogger(cfg.Logger)}
	if cfg.Metrics != nil {
		opts = append(opts, herald.WithObserver(cfg.Metrics))
	}
	opts = append(opts, cfg.Options...)
	r, err := newService(ctx, name, st, cfg, opts)
	if err == nil && cfg.Metrics != nil {
		cfg.Metrics.Watch(heraldOf(r))
	}
	return r, err
}

// heraldOf returns the herald service inside a shop service.
func heraldOf(r Runner) *herald.Service {
	switch v := r.(type) {
	case *orders.Service:
		return v.Service
	case *shipping.Service:
		return v.Service
	case *reviews.Service:
		return v.Service
	case *notifications.Service:
		return v.Service
	case withMailbox:
		return v.Service.Service
	}
	return nil
}

// withMetrics serves /metrics beside h when the config has metrics.
func (c Config) withMetrics(h http.Handler) http.Handler {
	if c.Registry == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/", h)
	return mux
}

func newService(ctx context.Context, name string, st *store.Store, cfg Config, opts []herald.Option) (Runner, error) {
	switch name {
	case "orders":
		return orders.New(ctx, st, opts...)
	case "shipping":
		return shipping.New(ctx, st, cfg.DispatchDelay, opts...)
	case "reviews":
		return reviews.New(ctx, st, opts...)
	case "notifications":
		svc, err := notifications.New(ctx, st, cfg.Senders, cfg.Notifications, opts...)
		if err != nil || cfg.mailbox == nil {
			return svc, err
		}
		return withMailbox{svc, cfg.mailbox}, nil
	}
	return nil, fmt.Errorf("shop: unknown service %q (want one of %v)", name, Services)
}

func (s *System) serve(addr string, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.servers = append(s.servers, srv)
	go func() { _ = srv.Serve(l) }()
	return l.Addr().String(), nil
}

// Close stops the HTTP servers, the services and closes the databases.
func (s *System) Close() error {
	var errs []error
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.Shutdown(ctx))
		cancel()
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	for _, st := range s.stores {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}
