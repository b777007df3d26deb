package notify

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
)

// order is the payload of the test notifications.
type order struct {
	ID       string   `json:"id"`
	To       []string `json:"to"`
	Total    int      `json:"total"`
	Critical bool     `json:"critical,omitempty"`
	Group    string   `json:"group,omitempty"`
}

var orderShipped = herald.Notification[order]("shop.order.shipped")

// clock is a test clock: real time plus an offset tests move.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Set(t time.Time)         { c.off.Store(int64(time.Until(t))) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// recSender records what it sends and fails on demand.
type recSender struct {
	name, channel string
	delivered     bool // report Receipt.Delivered

	mu    sync.Mutex
	msgs  []Message
	times []time.Time
	fail  func(m Message, call int) error
	calls int
}

func newSender(name, channel string) *recSender { return &recSender{name: name, channel: channel} }

func (s *recSender) Name() string    { return s.name }
func (s *recSender) Channel() string { return s.channel }
func (s *recSender) Send(ctx context.Context, m Message) (Receipt, error) {
	s.mu.Lock()
	s.calls++
	call, fail := s.calls, s.fail
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
	if fail != nil {
		if err := fail(m, call); err != nil {
			return Receipt{}, err
		}
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	return Receipt{Provider: s.name, ProviderID: fmt.Sprintf("%s-%d", s.name, call), Delivered: s.delivered}, nil
}

func (s *recSender) setFail(f func(m Message, call int) error) {
	s.mu.Lock()
	s.fail = f
	s.mu.Unlock()
}

func (s *recSender) sent() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

func (s *recSender) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *recSender) callTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.times)
}

// env is a service that emits and receives notifications, with a notifier.
type env struct {
	t       testing.TB
	ctx     context.Context
	b       *natsjs.Broker
	st      *store.Store
	svc     *herald.Service
	n       *Notifier
	clk     *clock
	dir     MapDirectory
	senders map[string]*recSender
}

type setup struct {
	spec     Spec[order]
	opts     []Option
	channels []string // senders to register (default: the spec's channels and fallbacks)
	senders  func(e *env) error
	noStart  bool
	extra    func(e *env) error // more routes, before the service starts
	broker   *natsjs.Broker
	store    *store.Store
	dir      MapDirectory
	svcOpts  []herald.Option // more options of the service
}

func quiet() *slog.Logger {
	if os.Getenv("NOTIFY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var testTemplates = map[string]Template{
	"order.shipped":        {Subject: "Order {{.Data.ID}} shipped", Text: "Hi {{.Recipient.Name}}, order {{.Data.ID}} ({{.Data.Total}}) is on its way."},
	"order.shipped/sms":    {Text: "Order {{.Data.ID}} shipped"},
	"order.shipped.digest": {Subject: "{{len .Items}} orders shipped", Text: "{{len .Items}} orders:{{range .Items}} {{.Data.ID}}{{end}}"},
	"order.broken":         {Subject: "x", Text: "{{.Data.Nope}}"},
}

func testDirectory() MapDirectory {
	return MapDirectory{
		"alice": {Name: "Alice", TimeZone: "Asia/Tokyo", Locale: "ja-JP", Addresses: map[string]string{
			Email: "Alice@Example.com", Push: `{"endpoint":"https://push.example/alice"}`, SMS: "+81312345678"}},
		"bob":   {Name: "Bob", TimeZone: "America/New_York", Addresses: map[string]string{Email: "bob@example.com"}},
		"carol": {Name: "Carol", Addresses: map[string]string{Email: "not an address", SMS: "0123"}},
		"dave":  {Name: "Dave", Addresses: map[string]string{Email: "dave@example.com", Push: "dave-push"}},
	}
}

func defaultSpec() Spec[order] {
	return Spec[order]{
		Category:   "orders",
		Recipients: func(o order) []string { return o.To },
		Channels:   []string{Email},
		Template:   "order.shipped",
		Critical:   func(o order) bool { return o.Critical },
		GroupBy:    func(o order) string { return o.Group },
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func newBroker(t testing.TB) *natsjs.Broker {
	t.Helper()
	b, err := natsjs.Embedded(context.Background(), natsjs.WithEphemeral(),
		natsjs.WithPrefix("n"+randHex(4)), natsjs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// newEnv builds and starts a service "shop" that emits orderShipped and
// routes it through a notifier.
func newEnv(t testing.TB, dialect string, s setup) *env {
	t.Helper()
	e := &env{t: t, ctx: context.Background(), clk: &clock{}, senders: map[string]*recSender{}}
	e.b = s.broker
	if e.b == nil {
		e.b = newBroker(t)
	}
	e.st = s.store
	if e.st == nil {
		e.st = testdb.For(t, dialect)
	}
	e.dir = s.dir
	if e.dir == nil {
		e.dir = testDirectory()
	}
	var err error
	e.svc, err = herald.New("shop", append([]herald.Option{herald.WithStore(e.st), herald.WithBroker(e.b), herald.WithLogger(quiet()),
		herald.WithRelay(herald.RelayConfig{PollInterval: 20 * time.Millisecond}),
		herald.Retry(herald.RetryPolicy{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond})},
		s.svcOpts...)...)
	must(t, err)
	must(t, e.svc.Register(orderShipped))
	tpl, err := NewTemplates(testTemplates)
	must(t, err)
	opts := append([]Option{WithClock(e.clk.Now), WithRenderer(tpl), WithPollInterval(10 * time.Millisecond), WithLogger(quiet()),
		WithSendRetry(Retry{MaxAttempts: 4, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond, MaxAge: time.Minute}),
		WithBreaker(Breaker{Failures: 1000})}, s.opts...)
	e.n, err = NewNotifier(e.svc, e.dir, opts...)
	must(t, err)
	spec := s.spec
	if spec.Recipients == nil {
		spec = defaultSpec()
	}
	must(t, Route(e.n, orderShipped, spec, herald.AckWait(2*time.Second)))
	if s.senders != nil {
		must(t, s.senders(e))
	} else {
		chans := s.channels
		if chans == nil {
			chans = spec.Channels
			for _, f := range spec.Fallback {
				chans = append(chans, f.To)
			}
		}
		for _, ch := range chans {
			e.senders[ch] = newSender(ch+"-1", ch)
			must(t, e.n.Senders(ch, e.senders[ch]))
		}
	}
	if s.extra != nil {
		must(t, s.extra(e))
	}
	must(t, e.svc.Start(e.ctx))
	t.Cleanup(func() { e.n.Close(); e.svc.Close() })
	if !s.noStart {
		must(t, e.n.Start(e.ctx))
	}
	return e
}

// emit records one notification in a Do, with correlation id corr.
func (e *env) emit(corr string, o order) {
	e.t.Helper()
	ctx := herald.WithCorrelationID(e.ctx, corr)
	must(e.t, e.svc.Do(ctx, func(tx herald.Tx) error { return herald.Notify(tx, orderShipped, o) }))
}

// emitOn records one notification of c in a Do, with correlation id corr.
func emitOn[T any](e *env, c *herald.NotificationEvent[T], corr string, v T) {
	e.t.Helper()
	ctx := herald.WithCorrelationID(e.ctx, corr)
	must(e.t, e.svc.Do(ctx, func(tx herald.Tx) error { return herald.Notify(tx, c, v) }))
}

// deliveries matching f.
func (e *env) deliveries(f DeliveryFilter) []Delivery {
	e.t.Helper()
	ds, err := e.n.Deliveries(e.ctx, f)
	must(e.t, err)
	return ds
}

// waitDeliveries waits until f matches want rows in a final state
// (none queued, deferred or sending) and returns them.
func (e *env) waitDeliveries(f DeliveryFilter, want int) []Delivery {
	e.t.Helper()
	var ds []Delivery
	testwait.UntilReport(e.t, 15*time.Second, func() bool {
		ds = e.deliveries(f)
		if len(ds) != want {
			return false
		}
		for _, d := range ds {
			if d.State == Queued || d.State == Deferred || d.State == Sending {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("deliveries %+v: %s", f, dump(ds)) })
	return ds
}

// waitState waits until the delivery of f on channel ch reaches state.
func (e *env) waitState(f DeliveryFilter, st State) Delivery {
	e.t.Helper()
	var ds []Delivery
	testwait.UntilReport(e.t, 15*time.Second, func() bool {
		ds = e.deliveries(f)
		return len(ds) == 1 && ds[0].State == st
	}, func() string { return fmt.Sprintf("want one %s delivery for %+v, have %s", st, f, dump(ds)) })
	return ds[0]
}

func dump(ds []Delivery) string {
	s := fmt.Sprintf("%d rows", len(ds))
	for _, d := range ds {
		s += fmt.Sprintf("\n  %s %s/%s/%s %s attempts=%d due=%s reason=%q err=%q provider=%s",
			d.Kind, d.EventID, d.Recipient, d.Channel, d.State, d.Attempts, d.DueAt.Format(time.RFC3339Nano), d.Reason, d.LastError, d.Provider)
	}
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func forEachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			if d == "postgres" && os.Getenv(testdb.EnvPostgres) == "" {
				t.Skipf("set %s to run on PostgreSQL", testdb.EnvPostgres)
			}
			t.Parallel()
			fn(t, d)
		})
	}
}
