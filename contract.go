package herald

import (
	"fmt"
	"reflect"
	"regexp"

	"github.com/heraldhq/herald/envelope"
)

// Kind is the tier of an event: domain, integration or notification.
type Kind = envelope.Kind

// The three kinds.
const (
	KindDomain       = envelope.KindDomain
	KindIntegration  = envelope.KindIntegration
	KindNotification = envelope.KindNotification
)

// Contract is what every event contract has, whatever its payload type.
type Contract interface {
	// Name is the event type, e.g. "shop.order.confirmed".
	Name() string
	// Version is the contract's version (1 for domain events unless set).
	Version() int
	// Kind is the tier the contract belongs to.
	Kind() Kind
	// PayloadType is the Go type of the event's data.
	PayloadType() reflect.Type

	base() *contractBase
}

// contractBase holds what all three kinds share.
type contractBase struct {
	name    string
	version int
	kind    Kind
	codec   envelope.Codec
	payload reflect.Type
	keyFn   any   // func(T) string, integration only
	err     error // an option error, reported at registration
}

func (c *contractBase) Name() string              { return c.name }
func (c *contractBase) Version() int              { return c.version }
func (c *contractBase) Kind() Kind                { return c.kind }
func (c *contractBase) PayloadType() reflect.Type { return c.payload }
func (c *contractBase) base() *contractBase       { return c }

func (c *contractBase) String() string {
	return fmt.Sprintf("%s contract %q v%d", c.kind, c.name, c.version)
}

// Version sets a contract's version (default 1). Bump it for a breaking
// change of the payload; consumers declare which versions they accept.
func Version(v int) ContractOption {
	return contractOption(func(c *contractBase) error {
		c.version = v
		if v < 1 {
			return fmt.Errorf("version %d < 1", v)
		}
		return nil
	})
}

// WithCodec sets the codec of the event's data (default envelope.JSON).
func WithCodec(codec envelope.Codec) ContractOption {
	return contractOption(func(c *contractBase) error {
		if codec == nil {
			return fmt.Errorf("nil codec")
		}
		c.codec = codec
		return nil
	})
}

// KeyBy sets the partition-key function of an integration contract: events
// with the same key are handled in publish order. T must be the contract's
// payload type.
func KeyBy[T any](fn func(T) string) ContractOption {
	return contractOption(func(c *contractBase) error {
		if fn == nil {
			return fmt.Errorf("nil KeyBy function")
		}
		c.keyFn = fn
		return nil
	})
}

// DomainEvent is the contract of a domain event with payload T: private to
// its service, recorded in the service's transaction, never on the broker.
type DomainEvent[T any] struct{ contractBase }

// IntegrationEvent is the contract of an integration event with payload T:
// a versioned public contract between services.
type IntegrationEvent[T any] struct{ contractBase }

// NotificationEvent is the contract of a notification event with payload T:
// something people or external systems are told about.
type NotificationEvent[T any] struct{ contractBase }

func newBase[T any](name string, kind Kind, opts []ContractOption) contractBase {
	c := contractBase{name: name, version: 1, kind: kind, codec: envelope.JSON,
		payload: reflect.TypeFor[T]()}
	for _, o := range opts {
		if o == nil {
			if c.err == nil {
				c.err = fmt.Errorf("nil option")
			}
			continue
		}
		if err := o.applyContract(&c); err != nil && c.err == nil {
			c.err = err
		}
	}
	if c.keyFn != nil {
		if _, ok := c.keyFn.(func(T) string); !ok && c.err == nil {
			c.err = fmt.Errorf("KeyBy function is %T, want func(%v) string", c.keyFn, c.payload)
		}
		if kind != KindIntegration && c.err == nil {
			c.err = fmt.Errorf("KeyBy is only for integration contracts")
		}
	}
	return c
}

// Domain declares a domain event contract. It never fails: a malformed name
// or option is reported when the contract is registered on a service.
func Domain[T any](name string, opts ...ContractOption) *DomainEvent[T] {
	return &DomainEvent[T]{newBase[T](name, KindDomain, opts)}
}

// Integration declares an integration event contract, e.g.
//
//	herald.Integration[OrderConfirmed]("shop.order.confirmed",
//		herald.Version(1), herald.KeyBy(func(e OrderConfirmed) string { return e.OrderID }))
func Integration[T any](name string, opts ...ContractOption) *IntegrationEvent[T] {
	return &IntegrationEvent[T]{newBase[T](name, KindIntegration, opts)}
}

// Notification declares a notification event contract.
func Notification[T any](name string, opts ...ContractOption) *NotificationEvent[T] {
	return &NotificationEvent[T]{newBase[T](name, KindNotification, opts)}
}

// key returns the partition key of v ("" without KeyBy).
func (c *IntegrationEvent[T]) key(v T) string {
	if fn, ok := c.keyFn.(func(T) string); ok {
		return fn(v)
	}
	return ""
}

// Key returns the partition key the contract assigns to v.
func (c *IntegrationEvent[T]) Key(v T) string { return c.key(v) }

// namePattern: dot-separated lower-case segments, each starting with a
// letter; it is safe as a broker subject token and a SQL value.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$`)

const maxNameLen = 200

// validate reports what is wrong with c, naming it.
func validate(c Contract) error {
	b := c.base()
	switch {
	case b.name == "":
		return fmt.Errorf("%w: %s contract with an empty name", ErrInvalidContract, b.kind)
	case len(b.name) > maxNameLen:
		return fmt.Errorf("%w: %s contract %q: name longer than %d", ErrInvalidContract, b.kind, b.name, maxNameLen)
	case !namePattern.MatchString(b.name):
		return fmt.Errorf("%w: %s contract %q: name must be dot-separated lower-case words (a-z, 0-9, '-', '_')",
			ErrInvalidContract, b.kind, b.name)
	case b.err != nil:
		return fmt.Errorf("%w: %s: %v", ErrInvalidContract, b, b.err)
	}
	return nil
}
