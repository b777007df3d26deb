package herald

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/envelope"
)

// RetryPolicy says how a subscription retries a failing handler.
type RetryPolicy struct {
	// MaxAttempts counts every run of the handler, the first included
	// (default 5). After the last one the event is dead-lettered.
	MaxAttempts int
	// BaseDelay is the first retry's delay; each next one doubles, with equal
	// jitter: a delay d is drawn uniformly from [d/2, d] (default 100ms).
	BaseDelay time.Duration
	// MaxDelay caps the delay (default 30s).
	MaxDelay time.Duration
}

func defaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: 30 * time.Second}
}

func (p RetryPolicy) validate() error {
	if p.MaxAttempts < 1 || p.BaseDelay <= 0 || p.MaxDelay < p.BaseDelay {
		return fmt.Errorf("%w: retry policy %+v: want MaxAttempts >= 1 and 0 < BaseDelay <= MaxDelay", ErrInvalidOption, p)
	}
	return nil
}

// WithRetry sets the default retry policy of the service's subscriptions.
//
// Deprecated: use Retry, which New, Subscribe and Receive all take.
func WithRetry(p RetryPolicy) Option { return Retry(p) }

type subConfig struct {
	retry         RetryPolicy
	batch         int
	ackWait       time.Duration
	maxAckPending int
	emits         []Contract // declared effects, for the manifest (Emits)
	channels      []string   // declared channels, for the manifest (Delivers)
}

// BatchSize sets how many events at most one database transaction handles
// (default 128). A failing handler does not undo the others: the batch is
// then run again with a savepoint per event, without the failing one (the
// handlers that ran before it in the batch run again; their first run was
// rolled back).
func BatchSize(n int) SubscribeOption {
	return subscribeOption(func(c *subConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: batch size %d < 1", ErrInvalidOption, n)
		}
		c.batch = n
		return nil
	})
}

// AckWait sets how long the broker waits before redelivering an event whose
// consumer went silent (default 10s). herald extends it while it holds an
// event back for ordering or retry, so a short wait costs nothing while the
// instance lives; it bounds how long a crashed instance's events stay away
// (and how long a successor holds later events back to keep their order).
func AckWait(d time.Duration) SubscribeOption {
	return subscribeOption(func(c *subConfig) error {
		if d < 100*time.Millisecond {
			return fmt.Errorf("%w: ack wait %v < 100ms", ErrInvalidOption, d)
		}
		c.ackWait = d
		return nil
	})
}

// MaxInFlight bounds the events delivered but not yet settled (default 4096).
func MaxInFlight(n int) SubscribeOption {
	return subscribeOption(func(c *subConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: max in flight %d < 1", ErrInvalidOption, n)
		}
		c.maxAckPending = n
		return nil
	})
}

// subscription is one registered integration-event subscription.
type subscription struct {
	name     string
	contract Contract // the version the handler takes
	inbox    string   // inbox key: service/name
	decode   func(e *envelope.Envelope) (any, error)
	handle   func(ctx context.Context, tx Tx, v any) error
	cfg      subConfig
}

// versionError marks an event whose version the subscription cannot take.
type versionError struct{ msg string }

func (e versionError) Error() string { return e.msg }

// Subscribe registers handler fn as the subscription name of svc to the
// integration events of c. Every instance of svc shares one durable
// consumer. fn runs inside a database transaction together with the inbox
// row that makes a redelivered event a no-op, so its effect happens exactly
// once; it may change the service's tables and Record domain events through
// tx. Events of c's name with an older version are converted by the
// upcasters registered with Upcast; newer or unconvertible versions are
// dead-lettered at once.
func Subscribe[T any](svc *Service, c *IntegrationEvent[T], name string, fn func(ctx context.Context, tx Tx, e T) error, opts ...SubscribeOption) error {
	if c == nil {
		return fmt.Errorf("%w: service %s: Subscribe %q needs a contract", ErrInvalidOption, svc.name, name)
	}
	return subscribe(svc, c, name, fn, opts)
}

// Receive registers fn as the subscription name of svc to the notification
// events of c: the notifier's side of the notification tier. It works like
// Subscribe — a durable consumer shared by the service's instances, the
// handler in a transaction with an inbox row, retries and dead letters —
// so a notifier records what it must deliver exactly once and sends it
// outside the business flow.
func Receive[T any](svc *Service, c *NotificationEvent[T], name string, fn func(ctx context.Context, tx Tx, e T) error, opts ...SubscribeOption) error {
	if c == nil {
		return fmt.Errorf("%w: service %s: Receive %q needs a contract", ErrInvalidOption, svc.name, name)
	}
	return subscribe(svc, c, name, fn, opts)
}

func subscribe[T any](svc *Service, c Contract, name string, fn func(ctx context.Context, tx Tx, e T) error, opts []SubscribeOption) error {
	if err := svc.beforeStart("Subscribe"); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("%w: service %s: subscription %q needs a function", ErrInvalidOption, svc.name, name)
	}
	codec := c.base().codec
	if !serviceName.MatchString(name) {
		return fmt.Errorf("%w: service %s: subscription name %q: want lower-case letters, digits, '-' or '_'", ErrInvalidOption, svc.name, name)
	}
	cfg := subConfig{retry: svc.cfg.retry, batch: 128, ackWait: 10 * time.Second, maxAckPending: 4096}
	for _, o := range opts {
		if o == nil {
			return fmt.Errorf("%w: service %s: subscription %s: nil option", ErrInvalidOption, svc.name, name)
		}
		if err := o.applySubscribe(&cfg); err != nil {
			return fmt.Errorf("service %s: subscription %s: %w", svc.name, name, err)
		}
	}
	if err := svc.Register(append([]Contract{c}, cfg.emits...)...); err != nil {
		return err
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	for _, s := range svc.subs {
		if s.name == name {
			return fmt.Errorf("%w: service %s: subscription %q registered twice", ErrInvalidOption, svc.name, name)
		}
	}
	target := c.Version()
	svc.subs = append(svc.subs, &subscription{
		name:     name,
		contract: c,
		inbox:    svc.name + "/" + name,
		cfg:      cfg,
		handle:   func(ctx context.Context, tx Tx, v any) error { return fn(ctx, tx, v.(T)) },
		decode: func(e *envelope.Envelope) (any, error) {
			if e.Version == target {
				var v T
				if err := codec.Unmarshal(e.Data, &v); err != nil {
					return nil, err
				}
				return v, nil
			}
			if e.Version > target {
				return nil, versionError{fmt.Sprintf("version %d is newer than %d, the newest %s accepts", e.Version, target, name)}
			}
			v, err := svc.upcast(e, target)
			if err != nil {
				return nil, err
			}
			t, ok := v.(T)
			if !ok {
				return nil, versionError{fmt.Sprintf("upcasting %s v%d gave %T, want %T", e.Type, e.Version, v, t)}
			}
			return t, nil
		},
	})
	return nil
}

// upcaster converts one version of an event to the next one it knows.
type upcaster struct {
	to     int
	decode func(data []byte) (any, error)
	fn     func(v any) (any, error)
}

type upcastKey struct {
	name    string
	version int
}

// Upcast registers fn to convert events of from (an older version) to the
// version of to, for this service's subscriptions. Chains work: v1→v2 and
// v2→v3 together take v1 events to a v3 handler.
func Upcast[Old, New any](svc *Service, from *IntegrationEvent[Old], to *IntegrationEvent[New], fn func(Old) (New, error)) error {
	if err := svc.beforeStart("Upcast"); err != nil {
		return err
	}
	if from == nil || to == nil || fn == nil {
		return fmt.Errorf("%w: service %s: Upcast needs two contracts and a function", ErrInvalidOption, svc.name)
	}
	if from.Name() != to.Name() || from.Version() >= to.Version() {
		return fmt.Errorf("%w: service %s: Upcast %s → %s must go to a newer version of the same event",
			ErrInvalidOption, svc.name, describe(from), describe(to))
	}
	if err := svc.Register(from, to); err != nil {
		return err
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.upcasters == nil {
		svc.upcasters = map[upcastKey]upcaster{}
	}
	k := upcastKey{from.Name(), from.Version()}
	if _, dup := svc.upcasters[k]; dup {
		return fmt.Errorf("%w: service %s: a second upcaster from %s", ErrInvalidOption, svc.name, describe(from))
	}
	svc.upcasters[k] = upcaster{
		to: to.Version(),
		decode: func(data []byte) (any, error) {
			var v Old
			err := from.codec.Unmarshal(data, &v)
			return v, err
		},
		fn: func(v any) (any, error) { return fn(v.(Old)) },
	}
	return nil
}

// upcast converts e to version target through the registered chain.
func (s *Service) upcast(e *envelope.Envelope, target int) (any, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	up, ok := s.upcasters[upcastKey{e.Type, e.Version}]
	if !ok {
		return nil, versionError{fmt.Sprintf("no upcaster from %s v%d", e.Type, e.Version)}
	}
	v, err := up.decode(e.Data)
	if err != nil {
		return nil, err
	}
	for {
		if v, err = up.fn(v); err != nil {
			return nil, versionError{fmt.Sprintf("upcasting %s to v%d: %v", e.Type, up.to, err)}
		}
		if up.to == target {
			return v, nil
		}
		next, ok := s.upcasters[upcastKey{e.Type, up.to}]
		if !ok {
			return nil, versionError{fmt.Sprintf("no upcaster from %s v%d", e.Type, up.to)}
		}
		up = next
	}
}
