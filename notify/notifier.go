package notify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/store"
	"github.com/sony/gobreaker/v2"
)

// Sentinel errors of the notifier, testable with errors.Is.
var (
	// ErrInvalidOption wraps every error about a bad option, spec or
	// registration. It wraps herald.ErrInvalidOption, so either matches.
	ErrInvalidOption = fmt.Errorf("notify: %w", herald.ErrInvalidOption)
	// ErrStarted is returned by registrations after Start.
	ErrStarted = errors.New("notify: notifier already started")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("notify: notifier closed")
	// ErrNotFound is returned by MarkDelivered and MarkBounced when no
	// delivery matches.
	ErrNotFound = errors.New("notify: delivery not found")
)

// Notifier turns notification events into deliveries, without ever
// blocking or failing the business flow that emitted them.
//
// # How it works
//
// Services emit with herald.Notify inside Do; the event leaves through the
// outbox. Route subscribes the notifier's service to it (herald.Receive), and
// the route's handler runs in the subscription's transaction, with the inbox
// row, so it runs exactly once per event. It only decides: for each
// recipient and channel it runs the pipeline
//
//	idempotency key (event id / recipient / channel) → Directory → preferences
//	(critical ignores them) → address check → suppression list → quiet hours
//	in the recipient's zone → throttle → digest
//
// and writes one delivery-log row in state queued, deferred, suppressed,
// throttled, digested or failed, with a reason. It sends nothing.
//
// The worker (Start, Close) claims due rows — state queued or deferred with
// due_at passed, or sending with an expired lease — marking them sending
// with an owner and a lease, renders them, sends them through the channel's
// senders, and records the outcome: sent or delivered, queued again after a
// backoff (retryable errors), or failed. It works in rounds: one
// transaction records the outcomes finished since the previous round (a
// group commit) and claims rows for the free workers, so a busy notifier
// commits once per many deliveries. Several instances on one database share
// the rows. A claim's lease is short (WithLease, default 3s) and renewed,
// for all the rows the instance holds in one statement, every third of the
// lease while the instance works: a send may take longer than the lease and
// keep its row, and a crashed instance's claims expire within one lease and
// are sent by the others. An instance that cannot renew (its database is
// unreachable) stops sending the rows whose lease ran out, since another
// instance may have claimed them; a process paused for longer than a lease
// loses its claims like a dead one.
//
// # Exactly once, except where the channel cannot tell
//
// A delivery is decided once (inbox plus a unique idempotency key) and is
// normally sent once. It is sent a second time only when the provider took
// it but its outcome was never recorded: the process died between the
// provider's accept and the commit of the sent state, the database was
// unreachable for the record, a sender ignored its context and was
// abandoned after the send timeout, or the send's lease ran out unrenewed
// (the database unreachable or the process paused for a whole lease) as
// the provider took it. Every Message carries its delivery's
// Key, so whether a receiver notices depends on the channel:
//
//   - Webhook: the Key is the webhook-id; Standard Webhooks receivers drop
//     the repeat.
//   - Email (SMTP): SMTP has no idempotency, so the recipient gets a second
//     e-mail, with the same Message-ID (some clients fold it).
//   - SMS, Chat: most APIs take no idempotency key: a second message.
//   - Push: a second notification, unless the sender uses the Key as the
//     Web Push Topic, in which case the push service replaces an undelivered
//     one.
//
// # What it reports
//
// Every delivery a decision inserted is a herald.HopDecide observation of
// the service — recipient, channel, the state it was decided in — reported
// once the decision's transaction commits, before the subscription's
// handle hop of the event (heraldtest waits on them).
// Every delivery's end is a herald.HopDeliver observation of the service
// (the metrics package counts them in herald_notifications_total by
// channel, outcome and reason code; see DeliveryError): what the worker
// records, and the deliveries a decision ended (failed, suppressed,
// throttled), once their transaction is seen committed. A delivery that
// failed because the recipient has no address on the channel (reason
// no-address) is also logged, at Warn, once per recipient and channel: the
// notifier remembers the 4096 pairs it logged most recently (an LRU), and
// logs a pair again only after forgetting it.
//
// # Order of calls
//
// NewNotifier, Route and Senders before the service's Start (Route registers a
// subscription), then Start; Close before closing the store. Decisions made
// while no worker runs wait in the log.
type Notifier struct {
	svc   *herald.Service
	st    *store.Store
	eng   *store.Engine // st's engine side: transactions
	dir   Directory
	cfg   config
	log   *slog.Logger
	id    string // this instance, the owner of its claims
	pg    bool
	q     queries
	stmts map[string]*sql.Stmt // the hot queries, prepared

	mu      sync.RWMutex // guards routes, senders and the life cycle
	routes  map[string]*route
	senders map[string][]*provider
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	leases *leases // the claims this instance holds, renewed while it runs

	ended     decidedMemo // decisions that ended a delivery, until seen committed (report.go)
	noAddress *lru        // (recipient, channel) pairs whose missing address was logged

	wake   chan struct{}
	seq    atomic.Uint64
	pruned atomic.Int64 // last prune, unix nanos of the clock
}

// provider is one Sender behind its circuit breaker.
type provider struct {
	s  Sender
	cb *gobreaker.CircuitBreaker[Receipt]
}

type config struct {
	clock       func() time.Time
	renderer    Renderer
	workers     int
	poll        time.Duration
	retry       Retry
	breaker     Breaker
	sendTimeout time.Duration
	lease       time.Duration
	quiet       *QuietHours
	defaults    map[prefKey]bool
	log         *slog.Logger
	retention   time.Duration
	validate    map[string]func(string) (string, error)
}

// Option configures a Notifier. Options validate their values and return
// errors wrapping ErrInvalidOption.
type Option func(*config) error

// Retry says how the worker retries a failed send.
type Retry struct {
	// MaxAttempts counts provider calls, the first included (default 8).
	MaxAttempts int
	// BaseDelay is the first retry's delay; each next one doubles, with
	// jitter (default 1s).
	BaseDelay time.Duration
	// MaxDelay caps one delay (default 10m).
	MaxDelay time.Duration
	// MaxAge gives up on a delivery this long after it was decided, however
	// many attempts are left (default 24h).
	MaxAge time.Duration
}

func (r Retry) validate() error {
	if r.MaxAttempts < 1 || r.BaseDelay <= 0 || r.MaxDelay < r.BaseDelay || r.MaxAge <= 0 {
		return fmt.Errorf("%w: retry %+v: want MaxAttempts >= 1, 0 < BaseDelay <= MaxDelay, MaxAge > 0", ErrInvalidOption, r)
	}
	return nil
}

// Breaker tunes the circuit breaker in front of every sender.
type Breaker struct {
	// Failures is how many consecutive retryable failures open the breaker
	// (default 5). While it is open, sends go to the channel's next sender.
	Failures int
	// OpenFor is how long the breaker stays open before it lets probes
	// through (half-open; default 30s).
	OpenFor time.Duration
	// Probes is how many sends a half-open breaker lets through (default 1).
	Probes int
}

// WithClock sets the clock of every decision and schedule: quiet hours,
// throttle windows, digest windows, due times and claim leases (default
// time.Now). A clock that jumps forward by more than the lease expires the
// claims in flight, as after a crash: other instances may claim them, and
// rows whose sends have not started are released.
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		c.clock = now
		return nil
	}
}

// WithRenderer sets the template renderer (required when a route names a
// template): a notify/template *Set, or any Renderer.
func WithRenderer(r Renderer) Option {
	return func(c *config) error {
		if r == nil {
			return fmt.Errorf("%w: nil renderer", ErrInvalidOption)
		}
		c.renderer = r
		return nil
	}
}

// WithWorkers sets how many deliveries one instance sends at once
// (default 8).
func WithWorkers(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1024 {
			return fmt.Errorf("%w: workers %d: want 1..1024", ErrInvalidOption, n)
		}
		c.workers = n
		return nil
	}
}

// WithPollInterval sets how often the worker looks for due deliveries when
// nothing woke it (default 500ms). Decisions in this process wake it at
// once; those of other instances are seen at the next poll.
func WithPollInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Millisecond {
			return fmt.Errorf("%w: poll interval %v < 1ms", ErrInvalidOption, d)
		}
		c.poll = d
		return nil
	}
}

// WithSendRetry sets the retry policy of sends; zero fields keep their
// defaults. (herald.Retry is the other tier's: how a subscription
// retries its handler.)
func WithSendRetry(r Retry) Option {
	return func(c *config) error {
		d := defaultRetry()
		if r.MaxAttempts == 0 {
			r.MaxAttempts = d.MaxAttempts
		}
		if r.BaseDelay == 0 {
			r.BaseDelay = d.BaseDelay
		}
		if r.MaxDelay == 0 {
			r.MaxDelay = max(d.MaxDelay, r.BaseDelay)
		}
		if r.MaxAge == 0 {
			r.MaxAge = d.MaxAge
		}
		if err := r.validate(); err != nil {
			return err
		}
		c.retry = r
		return nil
	}
}

// WithBreaker tunes the senders' circuit breakers; zero fields keep their
// defaults.
func WithBreaker(b Breaker) Option {
	return func(c *config) error {
		if b.Failures < 0 || b.OpenFor < 0 || b.Probes < 0 {
			return fmt.Errorf("%w: breaker %+v has a negative field", ErrInvalidOption, b)
		}
		if b.Failures == 0 {
			b.Failures = 5
		}
		if b.OpenFor == 0 {
			b.OpenFor = 30 * time.Second
		}
		if b.Probes == 0 {
			b.Probes = 1
		}
		c.breaker = b
		return nil
	}
}

// WithSendTimeout bounds one provider call (default 30s). A sender that
// ignores its context is abandoned after it and the attempt counts as a
// retryable failure. It is independent of the lease, which is renewed
// during the send.
func WithSendTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: send timeout %v <= 0", ErrInvalidOption, d)
		}
		c.sendTimeout = d
		return nil
	}
}

// WithLease sets how long a claim lasts unrenewed (default DefaultLease,
// 3s; at least 100ms). While the notifier runs it renews the leases of all
// its claims every third of the lease, so a send may last longer than the
// lease; a row whose claimer died is claimed by another instance once the
// lease runs out, so the lease is how long a crash delays its claims. A
// shorter lease recovers sooner but renews more often (one write per
// renewal), and loses the claims of a process that cannot renew (database
// unreachable, process paused) sooner: such a process sends none of the
// rows whose leases ran out, and interrupts their sends in flight. The
// instances' clocks must agree to well within the lease: an instance whose
// clock runs ahead sees the others' leases run out early.
func WithLease(d time.Duration) Option {
	return func(c *config) error {
		if d < minLease {
			return fmt.Errorf("%w: lease %v < %v", ErrInvalidOption, d, minLease)
		}
		c.lease = d
		return nil
	}
}

// WithQuietHours sets the quiet hours of recipients whose Directory entry
// has none.
func WithQuietHours(q QuietHours) Option {
	return func(c *config) error {
		if err := q.validate(); err != nil {
			return err
		}
		c.quiet = &q
		return nil
	}
}

// WithDefaultOn turns category on channel on, in code, for recipients who
// said nothing and for whom no '*' row in the preferences table says
// otherwise. category or channel may be "*". Without any default,
// everything is on.
func WithDefaultOn(category, channel string) Option {
	return defaultPreference(category, channel, true)
}

// WithDefaultOff turns category on channel off, in code, for recipients who
// said nothing and for whom no '*' row in the preferences table says
// otherwise. category or channel may be "*".
func WithDefaultOff(category, channel string) Option {
	return defaultPreference(category, channel, false)
}

// WithDefaultPreference sets whether category on channel is on by default.
//
// Deprecated: use WithDefaultOn or WithDefaultOff.
func WithDefaultPreference(category, channel string, enabled bool) Option {
	return defaultPreference(category, channel, enabled)
}

// defaultPreference sets, in code, whether category on channel is on
// for recipients who said nothing and for whom no '*' row in the
// preferences table says otherwise. category or channel may be "*".
// Without any, everything is on.
func defaultPreference(category, channel string, enabled bool) Option {
	return func(c *config) error {
		if category == "" || channel == "" {
			return fmt.Errorf("%w: default preference needs a category and a channel (or \"*\")", ErrInvalidOption)
		}
		c.defaults[prefKey{category, channel}] = enabled
		return nil
	}
}

// WithAddressCheck replaces the check of channel's addresses: check returns
// the normalized address (the suppression list's key) or an error. Built-in
// checks: e-mail (RFC 5322 addr-spec, lower-cased), SMS (E.164), chat and
// webhook (absolute http(s) URL), anything else (non-empty).
func WithAddressCheck(channel string, check func(address string) (string, error)) Option {
	return func(c *config) error {
		if channel == "" || check == nil {
			return fmt.Errorf("%w: address check needs a channel and a function", ErrInvalidOption)
		}
		c.validate[channel] = check
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		c.log = l
		return nil
	}
}

// WithRetention keeps finished deliveries and closed digests for d
// (default 30 days); the worker prunes older ones. 0 keeps them forever.
func WithRetention(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: retention %v < 0", ErrInvalidOption, d)
		}
		c.retention = d
		return nil
	}
}

func defaultRetry() Retry {
	return Retry{MaxAttempts: 8, BaseDelay: time.Second, MaxDelay: 10 * time.Minute, MaxAge: 24 * time.Hour}
}

// NewNotifier returns a notifier on svc's store that resolves recipients
// through dir. Register routes with Route and senders with Senders, then
// Start it.
func NewNotifier(svc *herald.Service, dir Directory, opts ...Option) (*Notifier, error) {
	if svc == nil {
		return nil, fmt.Errorf("%w: nil service", ErrInvalidOption)
	}
	if dir == nil {
		return nil, fmt.Errorf("%w: nil directory", ErrInvalidOption)
	}
	c := config{
		clock:       time.Now,
		workers:     8,
		poll:        500 * time.Millisecond,
		retry:       defaultRetry(),
		breaker:     Breaker{Failures: 5, OpenFor: 30 * time.Second, Probes: 1},
		sendTimeout: 30 * time.Second,
		defaults:    map[prefKey]bool{},
		log:         slog.Default(),
		retention:   30 * 24 * time.Hour,
		validate:    map[string]func(string) (string, error){},
	}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, fmt.Errorf("notifier of %s: %w", svc.Name(), err)
		}
	}
	if c.lease == 0 {
		c.lease = DefaultLease
	}
	st := svc.Store()
	n := &Notifier{
		svc:     svc,
		st:      st,
		eng:     store.EngineOf(st),
		dir:     dir,
		cfg:     c,
		log:     c.log.With("service", svc.Name(), "component", "notifier"),
		id:      envelope.NewID(time.Now()),
		pg:      st.Dialect() == "postgres",
		routes:  map[string]*route{},
		senders: map[string][]*provider{},
		wake:    make(chan struct{}, 1),

		noAddress: newLRU(maxNoAddressLogs),
	}
	n.leases = newLeases(c.lease, c.clock, n.log)
	n.q = buildQueries(st, n.pg)
	if err := n.prepare(context.Background()); err != nil {
		return nil, err
	}
	n.serveAdmin() // once the service starts, its delivery log answers admin requests
	return n, nil
}

// now is the notifier's clock.
func (n *Notifier) now() time.Time { return n.cfg.clock() }

// Senders registers the providers of channel: primary gets every send while
// its circuit breaker is closed; when it opens (consecutive failures), sends
// go to the first failover whose breaker is closed, and a half-open breaker
// lets probes through to find out whether its provider is back. Every
// sender's Channel must be channel. Call it before Start.
func (n *Notifier) Senders(channel string, primary Sender, failover ...Sender) error {
	if channel == "" {
		return fmt.Errorf("%w: Senders needs a channel", ErrInvalidOption)
	}
	all := append([]Sender{primary}, failover...)
	ps := make([]*provider, 0, len(all))
	for i, s := range all {
		if s == nil {
			return fmt.Errorf("%w: channel %s: sender %d is nil", ErrInvalidOption, channel, i)
		}
		if s.Channel() != channel {
			return fmt.Errorf("%w: sender %s serves channel %q, not %q", ErrInvalidOption, s.Name(), s.Channel(), channel)
		}
		ps = append(ps, n.newProvider(channel, s))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.registrable("Senders"); err != nil {
		return err
	}
	if _, dup := n.senders[channel]; dup {
		return fmt.Errorf("%w: channel %s has senders already", ErrInvalidOption, channel)
	}
	n.senders[channel] = ps
	return nil
}

func (n *Notifier) newProvider(channel string, s Sender) *provider {
	b := n.cfg.breaker
	log := n.log
	return &provider{s: s, cb: gobreaker.NewCircuitBreaker[Receipt](gobreaker.Settings{
		Name:        channel + "/" + s.Name(),
		MaxRequests: uint32(b.Probes),
		Timeout:     b.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(b.Failures) },
		// A permanent error is the message's fault, not the provider's; a
		// shutdown or a lost lease is nobody's.
		IsExcluded: func(err error) bool {
			return isPermanent(err) || errors.Is(err, errShutdown) || errors.Is(err, errLeaseLost)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("sender circuit breaker", "sender", name, "from", from.String(), "to", to.String())
		},
	})}
}

// registrable fails once the notifier started or closed; n.mu is held.
func (n *Notifier) registrable(what string) error {
	switch {
	case n.closed:
		return fmt.Errorf("%w: %s", ErrClosed, what)
	case n.started:
		return fmt.Errorf("%w: %s must come before Start", ErrStarted, what)
	}
	return nil
}

// Start checks the configuration (every channel of every route has
// senders; a renderer exists if a route has a template) and runs the
// delivery worker until Close. It does not start the service: routes must be
// registered before the service's Start, and decisions are recorded while
// the worker is not running, to be sent once it is.
func (n *Notifier) Start(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("%w: nil context", ErrInvalidOption)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.registrable("Start"); err != nil {
		return err
	}
	for _, r := range n.routes {
		for _, ch := range r.allChannels() {
			if len(n.senders[ch]) == 0 {
				return fmt.Errorf("%w: route %s sends on %s, which has no senders: call Notifier.Senders", ErrInvalidOption, r.name, ch)
			}
		}
		if r.needsTemplates() && n.cfg.renderer == nil {
			return fmt.Errorf("%w: route %s renders template %q but the notifier has no renderer: pass notify.WithRenderer",
				ErrInvalidOption, r.name, r.template)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.started = true
	n.wg.Go(func() { n.dispatch(runCtx) })
	n.wg.Go(func() { n.leases.run(runCtx, n.renew) })
	return nil
}

// Close stops the worker: no new claims, no more lease renewals, sends in
// flight get their context cancelled and their rows are released for
// another attempt. A sender that ignores cancellation is abandoned (if its
// row's release cannot be recorded, the lease expires). It does not close
// the service or the store. Close is idempotent.
func (n *Notifier) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	cancel := n.cancel
	n.mu.Unlock()
	if cancel != nil {
		cancel()
		n.wg.Wait()
	}
	return nil
}

// signal wakes the worker without blocking.
func (n *Notifier) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *Notifier) route(name string) *route {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.routes[name]
}

func (n *Notifier) providers(channel string) []*provider {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.senders[channel]
}

// FuncSender makes a Sender of channel named name from fn, for tests and
// small adapters.
func FuncSender(channel, name string, fn func(ctx context.Context, m Message) (Receipt, error)) Sender {
	return funcSender{channel: channel, name: name, fn: fn}
}

type funcSender struct {
	channel, name string
	fn            func(ctx context.Context, m Message) (Receipt, error)
}

func (s funcSender) Name() string    { return s.name }
func (s funcSender) Channel() string { return s.channel }
func (s funcSender) Send(ctx context.Context, m Message) (Receipt, error) {
	return s.fn(ctx, m)
}
