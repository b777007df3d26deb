package broker

import "context"

// Lag is what the broker holds for one subscription: Pending events not yet
// delivered to it, and AckPending events delivered but not yet acknowledged.
type Lag struct {
	Pending    int
	AckPending int
}

// LagReporter is implemented by transports that can tell a subscription's
// lag; metrics report it as the consumer's pending count.
type LagReporter interface {
	Lag(ctx context.Context, sub Subscription) (Lag, error)
}
