package benchrun

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

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
)

// runBus compares, on one embedded nats-server (herald's default broker,
// listening on loopback for the others): herald's integration tier on
// SQLite (and PostgreSQL), raw nats.go, and the bench module's peers.
func runBus(ctx context.Context, r *runner) error {
	dir, err := r.subdir("nats-bus")
	if err != nil {
		return err
	}
	br, err := natsjs.Embedded(ctx, append(r.cfg.logOpts(), natsjs.WithDataDir(dir), natsjs.WithListen("127.0.0.1:0"))...)
	if err != nil {
		return fmt.Errorf("embedded nats-server: %w", err)
	}
	defer br.Close()
	n := r.cfg.Events
	if r.wants("raw-nats.go") {
		res, err := r.rawNATS(ctx, "bus", "raw-nats.go", br.URL(), n)
		if err != nil {
			return fmt.Errorf("raw nats.go: %w", err)
		}
		r.add(res)
	}
	for _, d := range r.dialects() {
		if !r.wants("herald-" + d) {
			continue
		}
		res, err := r.heraldBus(ctx, "bus", "herald-"+d, d, br, n)
		if err != nil {
			return fmt.Errorf("herald on %s: %w", d, err)
		}
		r.add(res)
	}
	if r.cfg.Peers != nil && slices.ContainsFunc(PeerSystems, r.wants) {
		return r.cfg.Peers.run(ctx, r, "bus", br.URL(), n)
	}
	return nil
}

// heraldBus measures the integration tier: n 512-byte integration events
// waiting in the producer's outbox (written before the clock starts, 256 per
// transaction), then relay → JetStream → the consumer's subscription, which
// handles each in a transaction with its inbox row. The clock runs from the
// relay's start to the last handled event; latency is from the relay's
// publish of an event's batch to its handler.
// dialects are SQLite and, with a URL, PostgreSQL.
func (r *runner) dialects() []string {
	if r.cfg.PostgresURL != "" {
		return []string{SQLite, Postgres}
	}
	return []string{SQLite}
}

func (r *runner) heraldBus(ctx context.Context, scenario, system, dialect string, br *natsjs.Broker, n int) (Result, error) {
	res := Result{Scenario: scenario, System: system}
	var mu sync.Mutex
	published := make(map[string]time.Time, n)
	handled := make(map[string]time.Time, n)
	bar := r.progress(system, n)
	defer bar.Done()
	cnt := newCounter(n, bar)
	m := StartMeter()
	p, err := r.newPipeline(ctx, pipelineSpec{
		name: scenario + "-" + dialect, dialect: dialect, broker: br,
		// Inline: a queued observer may not have seen every publish yet
		// when the last event is handled, and the latencies would miss
		// them (a run under load had none at all).
		prodOpts: []herald.Option{herald.WithObserver(inlineObserver(func(_ context.Context, o herald.Observation) {
			if o.Hop == herald.HopPublish && o.Outcome == herald.OutcomeOK {
				mu.Lock()
				published[o.Event.ID] = o.Start
				mu.Unlock()
			}
		}))},
		handle: func(ctx context.Context, _ herald.Tx, _ Event) error {
			now := time.Now()
			if ev, ok := herald.EventFrom(ctx); ok {
				mu.Lock()
				handled[ev.ID] = now
				mu.Unlock()
			}
			cnt.inc()
			return nil
		},
		subOpts: []herald.SubscribeOption{herald.BatchSize(256)},
	})
	if err != nil {
		return res, err
	}
	defer p.close()
	if err := p.cons.Start(ctx); err != nil {
		return res, err
	}
	if err := fillOutbox(ctx, p, n, 256); err != nil {
		return res, err
	}
	m.Restart()
	if err := p.prod.Start(ctx); err != nil {
		return res, err
	}
	if err := waitFor(ctx, cnt.done, 5*time.Minute, func() string { return fmt.Sprintf("%d of %d handled", cnt.count(), n) }); err != nil {
		return res, err
	}
	m.Stop(&res, n)
	mu.Lock()
	lat := make([]time.Duration, 0, len(handled))
	for id, h := range handled {
		if pub, ok := published[id]; ok {
			lat = append(lat, h.Sub(pub))
		}
	}
	mu.Unlock()
	fillLatency(&res, lat, nil)
	res.Note = "outbox filled before the clock; subscription BatchSize(256); latency from the relay's publish"
	return res, nil
}

// fillOutbox records n events in transactions of perTx.
func fillOutbox(ctx context.Context, p *pipeline, n, perTx int) error {
	blob := Blob()
	for i := 0; i < n; i += perTx {
		if err := p.prod.Do(ctx, func(tx herald.Tx) error {
			for j := i; j < min(i+perTx, n); j++ {
				if err := herald.Record(tx, p.recorded, Event{Key: "k" + strconv.Itoa(j%keys), Seq: j, Blob: blob}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("fill the outbox: %w", err)
		}
	}
	return nil
}

// rawNATS is the baseline: what nats.go alone does with the same 512-byte
// messages on the same server — asynchronous publishes with a 4096 window
// and a message id (deduplication, as herald's relay), a durable pull
// consumer with explicit acks, ack per message. The clock runs from the
// first publish to the last handled message; latency is from publish to
// handler.
func (r *runner) rawNATS(ctx context.Context, scenario, system, url string, n int) (Result, error) {
	res := Result{Scenario: scenario, System: system, Baseline: true}
	nc, err := nats.Connect(url)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return res, err
	}
	name := fmt.Sprintf("RAW_%d", time.Now().UnixNano())
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage})
	if err != nil {
		return res, err
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "sink", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return res, err
	}
	data := fmt.Appendf(nil, `{"key":"k1","seq":1,"blob":%q}`, Blob())
	bar := r.progress(system, n)
	defer bar.Done()
	lat := NewLatencies(n)
	done := make(chan struct{})
	cc, err := c.Consume(func(m jetstream.Msg) {
		sent, _ := strconv.ParseInt(m.Headers().Get("sent"), 10, 64)
		_ = m.Ack()
		if lat.Add(time.Since(time.Unix(0, sent))) == n {
			close(done)
		}
		bar.Add(1)
	}, jetstream.PullMaxMessages(512))
	if err != nil {
		return res, err
	}
	defer cc.Stop()
	m := StartMeter()
	for i := range n {
		msg := nats.NewMsg(name + ".k" + strconv.Itoa(i%keys))
		msg.Header.Set("sent", strconv.FormatInt(time.Now().UnixNano(), 10))
		msg.Data = data
		for {
			_, err := js.PublishMsgAsync(msg, jetstream.WithMsgID("m"+strconv.Itoa(i)))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return res, err
			}
			select { // the window is full: wait for acks
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
	}
	if err := waitFor(ctx, done, 5*time.Minute, func() string { return fmt.Sprintf("%d of %d handled", lat.Len(), n) }); err != nil {
		return res, err
	}
	m.Stop(&res, n)
	lat.Fill(&res, nil)
	res.Note = "loopback TCP to the same server"
	return res, nil
}

// inlineObserver is an ObserverFunc called on the observed goroutine
// (herald.InlineObserver): it sees every observation before the hop goes
// on.
type inlineObserver herald.ObserverFunc

func (f inlineObserver) Observe(ctx context.Context, o herald.Observation) { f(ctx, o) }

// Inline marks f as a herald.InlineObserver.
func (inlineObserver) Inline() {}
