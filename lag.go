package herald

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/broker"
)

// SubscriptionLag is one subscription's lag at the broker.
type SubscriptionLag struct {
	Subscription string
	broker.Lag
}

// Lags returns the broker's lag of each of the service's subscriptions: the
// events not yet delivered and those delivered but not acknowledged. It
// returns nil when the transport cannot tell (broker.LagReporter) or the
// service subscribes to nothing.
func (s *Service) Lags(ctx context.Context) ([]SubscriptionLag, error) {
	lr, ok := s.cfg.broker.(broker.LagReporter)
	if !ok {
		return nil, nil
	}
	s.mu.RLock()
	subs := append([]*subscription(nil), s.subs...)
	s.mu.RUnlock()
	out := make([]SubscriptionLag, 0, len(subs))
	for _, sub := range subs {
		l, err := lr.Lag(ctx, s.brokerSubscription(sub))
		if err != nil {
			return out, fmt.Errorf("service %s: lag of %s: %w", s.name, sub.name, err)
		}
		out = append(out, SubscriptionLag{Subscription: sub.name, Lag: l})
	}
	return out, nil
}
