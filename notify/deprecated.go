package notify

import "github.com/heraldhq/herald"

// The names below clashed with herald's functions of the same name, which
// mean something else in the other tiers (herald.New makes a service,
// herald.Permanent dead-letters an event, herald.Retry retries a
// handler). They stay, as the new names, so that code using them builds.

// New is NewNotifier.
//
// Deprecated: use NewNotifier.
func New(svc *herald.Service, dir Directory, opts ...Option) (*Notifier, error) {
	return NewNotifier(svc, dir, opts...)
}

// Permanent is PermanentFailure.
//
// Deprecated: use PermanentFailure.
func Permanent(err error) error { return PermanentFailure(err) }

// WithRetry is WithSendRetry.
//
// Deprecated: use WithSendRetry.
func WithRetry(r Retry) Option { return WithSendRetry(r) }
