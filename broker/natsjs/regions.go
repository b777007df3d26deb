package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Two regions (docs/regions.md): each region is a NATS cluster with a
// JetStream domain of its own; the consuming region's cluster connects to
// the producing region's by a leafnode. In the consuming region every
// integration stream also sources the same-named stream of the producing
// region, through that domain's API ($JS.<domain>.API): its consumers read
// a local copy, and a cut link only pauses the sourcing, which resumes
// from where it stopped.

// regionWait bounds how long Provision waits for the source region to
// answer before it refuses: long enough for a leafnode that is still
// connecting (it retries every second by default), short enough to report
// a missing link at once.
const regionWait = 5 * time.Second

// WithSourceRegion makes this region consume the integration events of
// another region: domain is the JetStream domain of that region's cluster
// (jetstream { domain: ... } in its servers' configuration), reached over
// a leafnode connection between the two clusters. Provision then makes each
// integration stream here (<PREFIX>_INT, or one per partition) source the
// same-named stream of that domain, so that subscriptions here receive
// every integration event published there, in the stream's order, and go
// on reading what arrived while the link between the regions is cut.
//
// The source region must be reachable and have provisioned its streams
// (with the same WithPrefix and WithPartitions) when Provision first sets
// up the sourcing here; Provision refuses otherwise, naming this option,
// and changes nothing. Once the streams here source that region, Provision
// no longer asks it: services here start while the link is cut. Events published here
// stay here: sourcing goes one way. The leafnode must deny the prefix's
// subjects (and $JS.ACK.> and $JS.EVENT.>) both ways, or the streams here
// also capture the other region's publishes directly: see
// docs/regions.md. Connect only.
func WithSourceRegion(domain string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithSourceRegion"); err != nil {
			return err
		}
		if err := validDomain(domain); err != nil {
			return invalid("WithSourceRegion(%q): %v", domain, err)
		}
		c.sourceRegion = domain
		return nil
	}
}

// validDomain accepts a JetStream domain name: one subject token of
// letters, digits, '-' and '_'.
func validDomain(d string) error {
	if d == "" {
		return errors.New("empty JetStream domain")
	}
	for i := 0; i < len(d); i++ {
		if !plainChar(d[i]) && d[i] != '_' {
			return fmt.Errorf("character %q not allowed in a JetStream domain; use letters, digits, '-' and '_'", d[i])
		}
	}
	return nil
}

// regionAPIPrefix is the API prefix of the JetStream of domain, as seen
// from another domain.
func regionAPIPrefix(domain string) string { return "$JS." + domain + ".API" }

// isIntegrationStream reports whether sc is one of the integration
// streams (one, or one per partition).
func (b *Broker) isIntegrationStream(sc jetstream.StreamConfig) bool {
	return slices.Contains(b.names.intStreams(), sc.Name)
}

// regionState is what Provision learns about the regions: this region's
// own JetStream domain, which names the durable consumers that the source
// region keeps for it.
type regionState struct {
	mu   sync.Mutex
	here string
}

func (r *regionState) domain() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.here
}

// sourceMaxAckPending bounds the events a source region's durable
// consumer has sent this region but not had acknowledged by flow control.
const sourceMaxAckPending = 4096

// sourceConsumer returns the name and delivery subject of the durable
// consumer that the stream of the source region keeps for region here:
// "region-<here>" and "_HERALD_SOURCE.<stream>.<here>" (outside the prefix,
// which the leafnode denies).
func sourceConsumer(stream, here string) (name, deliver string) {
	return "region-" + here, "_HERALD_SOURCE." + stream + "." + here
}

// sourceConsumerConfig is the config of that durable: a push consumer
// acknowledged by the flow control of the sourcing stream
// (AckFlowControl, nats-server 2.14+), heartbeats every second (the only
// value the server accepts for it), no expiry.
func sourceConsumerConfig(stream, here, there string) jetstream.ConsumerConfig {
	name, deliver := sourceConsumer(stream, here)
	return jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "herald: region " + here + " sources " + stream + " of region " + there,
		DeliverSubject: deliver,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		IdleHeartbeat:  time.Second,
		MaxAckPending:  sourceMaxAckPending,
		MaxDeliver:     -1,
	}
}

// regionSource returns the source of the same-named stream of the source
// region for an integration stream config, or nil: through that region's
// API, by the durable consumer it keeps for this region (durable sourcing:
// after a long cut the source resumes as soon as that consumer's
// heartbeats come through again, rather than after the server's retry
// backoff).
func (b *Broker) regionSource(sc jetstream.StreamConfig) *jetstream.StreamSource {
	here := b.region.domain()
	if b.cfg.sourceRegion == "" || here == "" || !b.isIntegrationStream(sc) {
		return nil
	}
	name, deliver := sourceConsumer(sc.Name, here)
	return &jetstream.StreamSource{
		Name:     sc.Name,
		External: &jetstream.ExternalStream{APIPrefix: regionAPIPrefix(b.cfg.sourceRegion)},
		Consumer: &jetstream.StreamConsumerSource{Name: name, DeliverSubject: deliver},
	}
}

// withSources returns sc with the source region's source (regionSource)
// in place of any source of the same stream and domain, and the other
// sources the stream has already (old, nil for a new stream) kept: a
// service without WithSourceRegion, provisioning the same streams, never
// removes a region's sourcing.
func (b *Broker) withSources(sc jetstream.StreamConfig, old *jetstream.StreamConfig) jetstream.StreamConfig {
	var srcs []*jetstream.StreamSource
	if old != nil {
		srcs = append(srcs, old.Sources...)
	}
	if src := b.regionSource(sc); src != nil {
		srcs = slices.DeleteFunc(srcs, func(s *jetstream.StreamSource) bool { return sameSource(s, src) })
		srcs = append(srcs, src)
	}
	sc.Sources = srcs
	return sc
}

// sameSource reports whether a and b source the same stream of the same
// domain (a stream sources another once).
func sameSource(a, b *jetstream.StreamSource) bool {
	prefix := func(s *jetstream.StreamSource) string {
		if s.External == nil {
			return ""
		}
		return s.External.APIPrefix
	}
	return a.Name == b.Name && prefix(a) == prefix(b)
}

// sameConsumer reports whether a and b read by the same durable consumer
// (or both by an ephemeral one).
func sameConsumer(a, b *jetstream.StreamSource) bool {
	if a.Consumer == nil || b.Consumer == nil {
		return a.Consumer == b.Consumer
	}
	return *a.Consumer == *b.Consumer
}

// checkSourceRegion makes sure, before Provision changes anything, that
// the source region (WithSourceRegion) answers and has every integration
// stream this region is to source, with as many partitions as this
// broker. It waits up to regionWait for a region that does not answer (a
// leafnode still connecting). When every integration stream here sources
// the region already there is nothing to set up and it checks nothing: a
// service of this region restarts while the link is cut.
func (b *Broker) checkSourceRegion(ctx context.Context) error {
	domain := b.cfg.sourceRegion
	if domain == "" {
		return nil
	}
	setting := fmt.Sprintf("WithSourceRegion(%q)", domain)
	if err := b.learnDomain(ctx, setting); err != nil {
		return err
	}
	if b.sourcing(ctx) {
		return nil
	}
	js, err := jetstream.NewWithDomain(b.nc, domain)
	if err != nil {
		return fmt.Errorf("herald/natsjs: provision: %s: %w", setting, err)
	}
	for _, name := range b.names.intStreams() {
		s, err := b.regionStream(ctx, js, name)
		switch {
		case err == nil:
			if have := streamPartitions(s); have != b.names.partitions {
				return fmt.Errorf("herald/natsjs: provision: %s: region %q: %w", setting, domain, partitionMismatch(name, have, b.names.partitions))
			}
		case errors.Is(err, jetstream.ErrStreamNotFound):
			// The region may have the streams of another partition count.
			for _, other := range []string{b.names.intStream, b.names.intStream + "_0"} {
				if s, oerr := b.regionStream(ctx, js, other); oerr == nil && other != name {
					return fmt.Errorf("herald/natsjs: provision: %s: region %q: %w", setting, domain, partitionMismatch(other, streamPartitions(s), b.names.partitions))
				}
			}
			return fmt.Errorf("herald/natsjs: provision: %s: region %q has no stream %s: provision the region's services first, "+
				"with the same WithPrefix and WithPartitions as here: %w", setting, domain, name, err)
		case ctx.Err() != nil:
			return fmt.Errorf("herald/natsjs: provision: %s: %w (last attempt: %w)", setting, ctx.Err(), err)
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrJetStreamNotEnabled),
			errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			return fmt.Errorf("herald/natsjs: provision: %s: the JetStream of region %q does not answer at %s.> "+
				"(waited %v): is the leafnode between the regions up, and is %q the domain of that region's servers? "+
				"Provision changed nothing (last error: %w)", setting, domain, regionAPIPrefix(domain), regionWait, domain, err)
		default:
			return fmt.Errorf("herald/natsjs: provision: %s: stream %s of region %q: %w", setting, name, domain, err)
		}
	}
	// The durable consumers the streams there keep for this region.
	here := b.region.domain()
	for _, name := range b.names.intStreams() {
		cfg := sourceConsumerConfig(name, here, domain)
		err := b.retryStartup(ctx, "provision consumer "+cfg.Durable+" on "+name+" of region "+domain, func(ctx context.Context) error {
			_, err := js.CreateOrUpdatePushConsumer(ctx, name, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("herald/natsjs: provision: %s: consumer %s on stream %s of region %q: %w", setting, cfg.Durable, name, domain, err)
		}
	}
	return nil
}

// learnDomain finds this region's own JetStream domain (from the
// account's JetStream info) for regionSource, and refuses a region without
// one, or with the source region's.
func (b *Broker) learnDomain(ctx context.Context, setting string) error {
	if b.region.domain() != "" {
		return nil
	}
	var here string
	err := b.retryStartup(ctx, "JetStream account info", func(ctx context.Context) error {
		ai, err := b.js.AccountInfo(ctx)
		if err == nil {
			here = ai.Domain
		}
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("herald/natsjs: provision: %s: this region's JetStream domain: %w", setting, err)
	case here == "":
		return fmt.Errorf("herald/natsjs: provision: %s: this region's servers have no JetStream domain; "+
			"give every server of each region its region's domain (jetstream { domain: ... }), this one other than %q", setting, b.cfg.sourceRegion)
	case here == b.cfg.sourceRegion:
		return fmt.Errorf("herald/natsjs: provision: %s: this region's servers are in that domain themselves: "+
			"connect to the servers of the consuming region, or give them a domain of their own", setting)
	}
	b.region.mu.Lock()
	b.region.here = here
	b.region.mu.Unlock()
	return nil
}

// sourcing reports whether every integration stream here exists and
// sources the source region already.
func (b *Broker) sourcing(ctx context.Context) bool {
	for _, sc := range b.streamConfigs() {
		src := b.regionSource(sc)
		if src == nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, apiAttempt)
		s, err := b.js.Stream(actx, sc.Name)
		cancel()
		if err != nil || !slices.ContainsFunc(s.CachedInfo().Config.Sources, func(s *jetstream.StreamSource) bool {
			return sameSource(s, src) && sameConsumer(s, src)
		}) {
			return false
		}
	}
	return true
}

// regionStream looks stream name up in the JetStream js of another region,
// retrying for up to regionWait while the region does not answer.
func (b *Broker) regionStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	deadline := time.Now().Add(regionWait)
	for {
		actx, cancel := context.WithTimeout(ctx, min(apiAttempt, time.Until(deadline)+time.Millisecond))
		s, err := js.Stream(actx, name)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNotFound) || ctx.Err() != nil || time.Now().After(deadline) {
			return s, err
		}
		select {
		case <-ctx.Done():
		case <-b.closed:
			return nil, fmt.Errorf("%w: %w", errClosed, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// streamPartitions is the partition count in an integration stream's
// metadata: 1 for a stream without it (created before partitions).
func streamPartitions(s jetstream.Stream) int {
	if n, err := strconv.Atoi(s.CachedInfo().Config.Metadata[metaPartitions]); err == nil && n >= 1 {
		return n
	}
	return 1
}
