package herald

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/broker"
)

// SubscriptionLag is one subscription's lag at the broker, summed over its
// partitions.
type SubscriptionLag struct {
	Subscription string
	broker.Lag
}

// Lags returns the broker's lag of each of the service's subscriptions: the
// events not yet delivered and those delivered but not acknowledged. It
// returns nil when the transport cannot tell (broker.LagReporter) or the
// service subscribes to nothing. A partitioned subscription's lag is the
// sum of its partitions'.
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
		bs := s.brokerSubscription(sub)
		var sum broker.Lag
		for p := range s.partitionsOf(sub) {
			bs.Partition = p
			l, err := lr.Lag(ctx, bs)
			if err != nil {
				return out, fmt.Errorf("service %s: lag of %s, partition %d: %w", s.name, sub.name, p, err)
			}
			sum.Pending += l.Pending
			sum.AckPending += l.AckPending
		}
		out = append(out, SubscriptionLag{Subscription: sub.name, Lag: sum})
	}
	return out, nil
}
