package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// ErrPartitionMismatch is wrapped by the error of a Provision whose
// WithPartitions differs from the partitions the system's streams were
// created with. Changing the count is an offline migration (see the package
// documentation, Partitions).
var ErrPartitionMismatch = errors.New("herald/natsjs: partition count differs from the streams'")

// Stream metadata keys: the partition count of the system and the
// partition a stream holds.
const (
	metaPartitions = "herald.partitions"
	metaPartition  = "herald.partition"
)

// Provision creates or updates the streams and the durable pull consumers
// of t's subscriptions (one per partition for integration subscriptions).
// It is idempotent and safe to run from several processes at once; it never
// deletes anything. It refuses, with an error wrapping
// ErrPartitionMismatch, a broker whose WithPartitions differs from the
// partitions of the existing integration streams.
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
		if _, err := b.names.eventSubject(p.Kind, p.Type, 0); err != nil {
			return fmt.Errorf("herald/natsjs: provision %s: publishes %q: %w", t.Service, p.Type, err)
		}
	}
	var cfgs []consumerSpec
	for _, s := range t.Subscriptions {
		specs, err := b.consumerConfigs(s)
		if err != nil {
			return fmt.Errorf("herald/natsjs: provision %s: %w", t.Service, err)
		}
		cfgs = append(cfgs, specs...)
	}

	if err := b.checkPartitions(ctx); err != nil {
		return err
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
	b.spreadLeaders(ctx, cfgs)
	return nil
}

// checkPartitions compares WithPartitions with the partitions of the
// integration streams that exist: <PREFIX>_INT (one partition; a stream
// from before partitions existed has no metadata and counts as one) and
// <PREFIX>_INT_0 (its herald.partitions). No stream yet: nothing to compare.
func (b *Broker) checkPartitions(ctx context.Context) error {
	for _, name := range []string{b.names.intStream, b.names.intStream + "_0"} {
		var have int
		err := b.retryStartup(ctx, "look up stream "+name, func(ctx context.Context) error {
			s, err := b.js.Stream(ctx, name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				have = 0
				return nil
			}
			if err != nil {
				return err
			}
			have = 1
			if v, ok := s.CachedInfo().Config.Metadata[metaPartitions]; ok {
				if have, err = strconv.Atoi(v); err != nil || have < 1 {
					return fmt.Errorf("stream %s: metadata %s=%q is not a partition count", name, metaPartitions, v)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("herald/natsjs: provision: partitions: %w", err)
		}
		if have != 0 && have != b.names.partitions {
			return partitionMismatch(name, have, b.names.partitions)
		}
	}
	return nil
}

func partitionMismatch(stream string, have, want int) error {
	return fmt.Errorf("%w: the system's streams have %d partition(s) (stream %s) and this broker has WithPartitions(%d); "+
		"start this service with natsjs.WithPartitions(%d) / --partitions %d / HERALD_PARTITIONS=%d, "+
		"or migrate offline to %d partitions (see the natsjs package documentation, Partitions, and docs/scale.md)",
		ErrPartitionMismatch, have, stream, want, have, have, have, want)
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
	n := b.names.partitions
	cfgs := make([]jetstream.StreamConfig, 0, n+2)
	for i, name := range b.names.intStreams() {
		var sc jetstream.StreamConfig
		if n == 1 {
			sc = events(name, "herald integration events and their replays",
				p+"."+tokInt+".>", p+"."+tokRpl+"."+tokInt+".>")
		} else {
			tok := strconv.Itoa(i)
			sc = events(name, fmt.Sprintf("herald integration events and their replays, partition %d of %d", i, n),
				p+"."+tokInt+"."+tok+".>", p+"."+tokRpl+"."+tokInt+"."+tok+".>")
		}
		sc.Metadata = map[string]string{metaPartitions: strconv.Itoa(n), metaPartition: strconv.Itoa(i)}
		cfgs = append(cfgs, sc)
	}
	return append(cfgs,
		events(b.names.ntfStream, "herald notification events and their replays",
			p+"."+tokNtf+".>", p+"."+tokRpl+"."+tokNtf+".>"),
		base(b.names.dlqStream, "herald dead letters", b.cfg.dlqMaxAge,
			p+"."+tokDLQ+".>"),
	)
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
		return fmt.Errorf("herald/natsjs: provision stream %s: %w%s", sc.Name, err, b.replicasHint(err))
	}
	return nil
}

// JetStream API errors of a replica count the servers cannot serve.
const (
	errCodeReplicasNotSupported = 10074 // replicas > 1 not supported in non-clustered mode
)

// replicasHint explains a failure to place a stream's replicas: which
// option asks for them and how many servers there are.
func (b *Broker) replicasHint(err error) string {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return ""
	}
	switch apiErr.ErrorCode {
	case errCodeReplicasNotSupported:
		return fmt.Sprintf(" (WithReplicas(%d): the server is a single node, not a cluster; use WithReplicas(1) or a cluster of at least %d servers)",
			b.cfg.replicas, b.cfg.replicas)
	case errCodeNoPeers:
		return fmt.Sprintf(" (WithReplicas(%d) needs %d JetStream servers; the connection knows %d: %s)",
			b.cfg.replicas, b.cfg.replicas, len(b.nc.Servers()), strings.Join(b.nc.Servers(), ", "))
	}
	return ""
}

type consumerSpec struct {
	stream string
	cfg    jetstream.ConsumerConfig
}

// partitionsOf returns the number of partitions of subscriptions of kind
// k: WithPartitions for integration subscriptions, 1 for notifications.
func (b *Broker) partitionsOf(k envelope.Kind) int {
	if k == envelope.KindIntegration {
		return b.names.partitions
	}
	return 1
}

// consumerConfigs validates s and returns the stream and consumer config of
// each of its partitions.
func (b *Broker) consumerConfigs(s broker.Subscription) ([]consumerSpec, error) {
	n := b.partitionsOf(s.Kind)
	out := make([]consumerSpec, 0, n)
	for p := range n {
		s.Partition = p
		spec, err := b.consumerConfig(s)
		if err != nil {
			return nil, err
		}
		out = append(out, spec)
	}
	return out, nil
}

// consumerConfig validates s and returns the stream and consumer config of
// its partition s.Partition.
func (b *Broker) consumerConfig(s broker.Subscription) (consumerSpec, error) {
	if err := validName("service", s.Service); err != nil {
		return consumerSpec{}, fmt.Errorf("subscription %q: %w", s.Name, err)
	}
	if err := validName("subscription", s.Name); err != nil {
		return consumerSpec{}, fmt.Errorf("subscription of %s: %w", s.Service, err)
	}
	if _, err := kindToken(s.Kind); err != nil {
		return consumerSpec{}, fmt.Errorf("subscription %s/%s: %w", s.Service, s.Name, err)
	}
	if n := b.partitionsOf(s.Kind); s.Partition < 0 || s.Partition >= n {
		if s.Kind != envelope.KindIntegration {
			return consumerSpec{}, fmt.Errorf("subscription %s/%s: partition %d: a %s subscription has one partition, 0",
				s.Service, s.Name, s.Partition, s.Kind)
		}
		return consumerSpec{}, fmt.Errorf("subscription %s/%s: partition %d: want 0 to %d (WithPartitions(%d))",
			s.Service, s.Name, s.Partition, n-1, n)
	}
	stream, err := b.names.stream(s.Kind, s.Partition)
	if err != nil {
		return consumerSpec{}, fmt.Errorf("subscription %s/%s: %w", s.Service, s.Name, err)
	}
	if len(s.Types) == 0 {
		return consumerSpec{}, fmt.Errorf("subscription %s/%s: no event types", s.Service, s.Name)
	}
	durable := b.names.durable(s.Kind, s.Service, s.Name, s.Partition)
	subjects := make([]string, 0, len(s.Types)+1)
	for _, typ := range s.Types {
		subj, err := b.names.eventSubject(s.Kind, typ, s.Partition)
		if err != nil {
			return consumerSpec{}, fmt.Errorf("subscription %s/%s: %w", s.Service, s.Name, err)
		}
		if !slices.Contains(subjects, subj) {
			subjects = append(subjects, subj)
		}
	}
	rpl, err := b.names.replaySubject(s.Kind, ConsumerName(s.Service, s.Name), s.Partition)
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
	desc := "herald subscription " + s.Service + "/" + s.Name + " (" + string(s.Kind) + ")"
	if b.partitionsOf(s.Kind) > 1 {
		desc += fmt.Sprintf(", partition %d of %d", s.Partition, b.partitionsOf(s.Kind))
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    desc,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  maxAckPending,
		FilterSubjects: subjects,
	}
	if b.ClaimsInOrder(s) {
		// One Consume at a time holds each partition (claim.go). The
		// server updates an existing consumer's priority policy in place.
		cfg.PriorityGroups = []string{priorityGroup}
		cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
		cfg.PinnedTTL = b.cfg.pinnedTTL
	}
	return consumerSpec{stream: stream, cfg: cfg}, nil
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
