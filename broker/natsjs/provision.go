package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// Provision creates or updates the three streams and one durable pull
// consumer per subscription of t. It is idempotent and safe to run from
// several processes at once; it never deletes anything.
func (b *Broker) Provision(ctx context.Context, t broker.Topology) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	ctx, stop := b.bind(ctx)
	defer stop()

	if err := validName("service", t.Service); err != nil {
		return fmt.Errorf("herald/natsjs: provision: %w", err)
	}
	for _, p := range t.Publishes {
		if _, err := b.names.eventSubject(p.Kind, p.Type); err != nil {
			return fmt.Errorf("herald/natsjs: provision %s: publishes %q: %w", t.Service, p.Type, err)
		}
	}
	cfgs := make([]consumerSpec, 0, len(t.Subscriptions))
	for _, s := range t.Subscriptions {
		spec, err := b.consumerConfig(s)
		if err != nil {
			return fmt.Errorf("herald/natsjs: provision %s: %w", t.Service, err)
		}
		cfgs = append(cfgs, spec)
	}

	if err := b.checkSourceRegion(ctx); err != nil {
		return err
	}
	if err := b.ensureStreams(ctx); err != nil {
		return err
	}
	for _, c := range cfgs {
		err := b.retryStartup(ctx, "provision consumer "+c.cfg.Durable, func(ctx context.Context) error {
			_, err := b.js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("herald/natsjs: provision consumer %s on %s: %w", c.cfg.Durable, c.stream, err)
		}
	}
	return nil
}

// bind returns a context that ends with ctx or when the broker closes.
func (b *Broker) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.baseCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (b *Broker) streamConfigs() []jetstream.StreamConfig {
	p := b.names.prefix
	base := func(name, desc string, maxAge time.Duration, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      maxAge,
			MaxMsgs:     -1,
			MaxBytes:    -1,
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.replicas,
			Duplicates:  min(b.cfg.dupWindow, maxAge),
		}
	}
	events := func(name, desc string, subjects ...string) jetstream.StreamConfig {
		sc := base(name, desc, b.cfg.maxAge, subjects...)
		sc.AllowAtomicPublish = b.cfg.atomicBatches
		return sc
	}
	return []jetstream.StreamConfig{
		events(b.names.intStream, "herald integration events and their replays",
			p+"."+tokInt+".>", p+"."+tokRpl+"."+tokInt+".>"),
		events(b.names.ntfStream, "herald notification events and their replays",
			p+"."+tokNtf+".>", p+"."+tokRpl+"."+tokNtf+".>"),
		base(b.names.dlqStream, "herald dead letters", b.cfg.dlqMaxAge,
			p+"."+tokDLQ+".>"),
	}
}

// ensureStreams creates or updates the streams. Two processes may race to
// create a stream; the loser retries as an update. Failures of a cluster
// electing its leaders are retried (see WithStartupRetry).
func (b *Broker) ensureStreams(ctx context.Context) error {
	for _, sc := range b.streamConfigs() {
		if err := b.ensureStream(ctx, sc, !sc.AllowAtomicPublish); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream creates or updates the stream of sc, retrying failures that
// go away by themselves. keepAtomic keeps atomic publishing on if the
// stream has it: it is never turned off under another publisher of the
// stream that uses it.
func (b *Broker) ensureStream(ctx context.Context, sc jetstream.StreamConfig, keepAtomic bool) error {
	err := b.retryStartup(ctx, "provision stream "+sc.Name, func(ctx context.Context) error {
		var old *jetstream.StreamConfig
		s, err := b.js.Stream(ctx, sc.Name)
		switch {
		case err == nil:
			old = &s.CachedInfo().Config
			if keepAtomic {
				sc.AllowAtomicPublish = sc.AllowAtomicPublish || old.AllowAtomicPublish
			}
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			return err
		}
		_, err = b.js.CreateOrUpdateStream(ctx, b.withSources(sc, old))
		return err
	})
	if err != nil {
		return fmt.Errorf("herald/natsjs: provision stream %s: %w", sc.Name, err)
	}
	return nil
}

type consumerSpec struct {
	stream string
	cfg    jetstream.ConsumerConfig
}

// consumerConfig validates s and returns its stream and consumer config.
func (b *Broker) consumerConfig(s broker.Subscription) (consumerSpec, error) {
	if err := validName("service", s.Service); err != nil {
		return consumerSpec{}, fmt.Errorf("subscription %q: %w", s.Name, err)
	}
	if err := validName("subscription", s.Name); err != nil {
		return consumerSpec{}, fmt.Errorf("subscription of %s: %w", s.Service, err)
	}
	stream, err := b.names.stream(s.Kind)
	if err != nil {
		return consumerSpec{}, fmt.Errorf("subscription %s/%s: %w", s.Service, s.Name, err)
	}
	if len(s.Types) == 0 {
		return consumerSpec{}, fmt.Errorf("subscription %s/%s: no event types", s.Service, s.Name)
	}
	durable := ConsumerName(s.Service, s.Name)
	subjects := make([]string, 0, len(s.Types)+1)
	for _, typ := range s.Types {
		subj, err := b.names.eventSubject(s.Kind, typ)
		if err != nil {
			return consumerSpec{}, fmt.Errorf("subscription %s/%s: %w", s.Service, s.Name, err)
		}
		if !slices.Contains(subjects, subj) {
			subjects = append(subjects, subj)
		}
	}
	rpl, err := b.names.replaySubject(s.Kind, durable)
	if err != nil {
		return consumerSpec{}, err
	}
	subjects = append(subjects, rpl)
	ackWait := s.AckWait
	if ackWait <= 0 {
		ackWait = DefaultSubscriptionAck
	}
	maxAckPending := s.MaxAckPending
	if maxAckPending <= 0 {
		maxAckPending = DefaultMaxAckPending
	}
	return consumerSpec{stream: stream, cfg: jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    "herald subscription " + s.Service + "/" + s.Name + " (" + string(s.Kind) + ")",
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  maxAckPending,
		FilterSubjects: subjects,
	}}, nil
}

// consumer looks the durable consumer of s up; a missing stream or consumer
// is reported as broker.ErrNotProvisioned.
func (b *Broker) consumer(ctx context.Context, stream, durable string) (jetstream.Consumer, error) {
	c, err := b.js.Consumer(ctx, stream, durable)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("herald/natsjs: consumer %s on stream %s: %w (%w)", durable, stream, broker.ErrNotProvisioned, err)
	case reconnecting(err):
		return nil, fmt.Errorf("herald/natsjs: consumer %s on stream %s: %w: %w", durable, stream, broker.ErrTransient, unreachable(err))
	default:
		return nil, fmt.Errorf("herald/natsjs: consumer %s on stream %s: %w", durable, stream, err)
	}
}
