package herald

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/consumer"
	"github.com/heraldhq/herald/internal/janitor"
	"github.com/heraldhq/herald/internal/relay"
)

// runState is what a started service runs; Close stops it.
type runState struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	instance string // this instance's id (relay lease holder, catalog)
	// The relay outlives the rest: Close drains it once the subscriptions
	// stopped.
	relay     *relay.Relay // nil without a broker
	janitor   *janitor.Janitor
	consumers []*consumer.Consumer // one per partition of each subscription
	stopAdmin func() error         // ends the admin endpoints (serveAdmin); nil without them
}

// Start provisions the service's streams and consumers on the broker (once,
// from the registered contracts), then runs its outbox relay, its
// subscriptions and the retention janitor until Close. Registrations
// (Handle, Translate, Subscribe, Upcast) must come before Start. When the
// broker keeps manifests (broker.ManifestStore, as natsjs does), Start
// publishes the service's Manifest for `herald catalog` and heartbeats this
// instance until Close; a catalog failure is logged, never fatal. When the
// broker serves admin requests (broker.AdminServer, as natsjs does), the
// instance answers them until Close (package admin: dead letters, stats,
// manifest, for `herald dlq` and the console).
func (s *Service) Start(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("%w: service %s: Start", ErrNilContext, s.name)
	}
	s.life.Lock()
	defer s.life.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("%w: %s", ErrClosed, s.name)
	case s.started:
		return fmt.Errorf("%w: %s", ErrStarted, s.name)
	}
	s.mu.RLock()
	subs := append([]*subscription(nil), s.subs...)
	s.mu.RUnlock()
	if s.cfg.broker != nil {
		if err := s.cfg.broker.Provision(ctx, s.topology()); err != nil {
			return fmt.Errorf("service %s: provision: %w", s.name, err)
		}
		if err := s.refill(ctx); err != nil {
			return err
		}
		s.learnLimit()
	} else if len(subs) > 0 || s.publishes() {
		return fmt.Errorf("%w: service %s translates, notifies or subscribes but has no broker: pass herald.WithBroker",
			ErrInvalidOption, s.name)
	}
	// One engine per partition of each subscription (partitionsOf), each
	// with its own queues: a partition's order is its own.
	consumers := make([]*consumer.Consumer, 0, len(subs))
	for _, sub := range subs {
		n := s.partitionsOf(sub)
		for p := range n {
			c, err := s.newConsumer(sub, p, n)
			if err != nil {
				return fmt.Errorf("service %s: subscription %s: partition %d: %w", s.name, sub.name, p, err)
			}
			consumers = append(consumers, c)
		}
	}
	holder := envelope.NewID(time.Now()) // this instance, for the relay lease
	var rl *relay.Relay
	if s.cfg.broker != nil {
		var err error
		if rl, err = s.newRelay(holder); err != nil {
			return fmt.Errorf("service %s: %w", s.name, err)
		}
	}
	jan, err := janitor.New(janitor.Config{EventLogRetention: s.cfg.retention, OutboxRetention: s.cfg.outboxRetention,
		InboxRetention: s.cfg.inboxRetention, Store: s.engine, Logger: s.log})
	if err != nil {
		return fmt.Errorf("service %s: %w", s.name, err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &runState{cancel: cancel, instance: holder, relay: rl, janitor: jan, consumers: consumers}
	if s.cfg.broker != nil {
		if heartbeat := s.announce(ctx, holder); heartbeat != nil {
			r.wg.Go(func() { heartbeat(runCtx) })
		}
		r.stopAdmin = s.serveAdmin(holder)
		s.outbox.Store(r.relay) // before it starts: no commit's wake is lost
		_ = r.relay.Start(ctx)  // never fails
		r.wg.Go(func() {
			// Commits of other processes (PostgreSQL) wake the relay too.
			_ = s.engine.OutboxListen(runCtx, func(service string) {
				if service == s.name {
					r.relay.Wake()
				}
			})
		})
		for _, c := range consumers {
			_ = c.Start(runCtx) // never fails
		}
	}
	_ = r.janitor.Start(ctx) // never fails
	s.run = r
	s.started = true
	return nil
}

// Close stops the service: new Do calls fail with ErrClosed, running ones
// finish, then the subscriptions and the janitor stop (events held by a
// subscription go back to the broker). Then the relay publishes what was
// committed — by those Do calls and by the subscriptions' handlers — until
// the outbox is empty, for at most RelayConfig.DrainTimeout (default 5s), and
// stops: a process that commits and exits has published its events. If the
// broker is unreachable, Close gives up after the timeout (at once if the
// broker or the store is closed) and logs at Warn how many events it left in
// the outbox; the service's next start, or another instance, publishes them.
// An instance that does not hold the relay lease has nothing to publish: the
// one that holds it does (Close logs at Info what the outbox holds for it).
// Last, the instance leaves the catalog (the manifest stays: the service
// shows as stale until an instance starts again or `herald catalog forget`
// retires it). Close does not close the store or the broker, which the
// caller owns: close them after it. Close is idempotent.
func (s *Service) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	r := s.run
	s.life.Unlock()
	s.inDo.Wait()
	if r != nil {
		if r.stopAdmin != nil {
			_ = r.stopAdmin()
		}
		r.cancel()
		var stops sync.WaitGroup // the subscriptions and the janitor stop together
		for _, c := range r.consumers {
			stops.Go(c.Stop)
		}
		stops.Go(r.janitor.Stop)
		stops.Wait()
		r.wg.Wait()
		if r.relay != nil {
			r.relay.Drain() // for at most RelayConfig.DrainTimeout
		}
		if s.cfg.broker != nil {
			s.withdraw(r.instance)
		}
	}
	// The observers' queues outlive the engines, so that what the engines
	// reported while they stopped is delivered too.
	s.obs.close()
	return nil
}

// publishes reports whether the service has anything for the outbox.
func (s *Service) publishes() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.translations) > 0 {
		return true
	}
	for _, c := range s.reg.Contracts() {
		if c.Kind() == KindNotification {
			return true
		}
	}
	return false
}

// topology is what the service publishes and consumes.
func (s *Service) topology() broker.Topology {
	t := broker.Topology{Service: s.name}
	for _, c := range s.reg.Contracts() {
		if c.Kind() != KindDomain {
			t.Publishes = append(t.Publishes, broker.TypeRef{Type: c.Name(), Kind: c.Kind()})
		}
	}
	s.mu.RLock()
	for _, sub := range s.subs {
		t.Subscriptions = append(t.Subscriptions, s.brokerSubscription(sub))
	}
	s.mu.RUnlock()
	return t
}

// refill re-publishes, at start, the outbox rows published within the
// broker's loss window before the service's last publish: a broker that
// fsyncs periodically may have lost them if the machine died. The broker
// drops the ones it still has by id; consumers' inboxes drop the rest.
func (s *Service) refill(ctx context.Context) error {
	lw, ok := s.cfg.broker.(broker.LossWindower)
	if !ok || lw.LossWindow() <= 0 {
		return nil
	}
	w := lw.LossWindow()
	if s.cfg.outboxRetention < 10*w {
		return fmt.Errorf("%w: service %s: outbox retention %v must be at least 10× the broker's loss window %v",
			ErrInvalidOption, s.name, s.cfg.outboxRetention, w)
	}
	last, err := s.engine.OutboxLastPublished(ctx, s.name)
	if err != nil || last.IsZero() {
		return err
	}
	n, err := s.engine.OutboxRepublishSince(ctx, s.name, last.Add(-2*w))
	if err != nil {
		return fmt.Errorf("service %s: refill the broker: %w", s.name, err)
	}
	if n > 0 {
		s.log.Info("re-publishing events the broker may have lost", "events", n, "window", 2*w)
	}
	return nil
}
