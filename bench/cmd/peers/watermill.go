package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/benchrun"
)

// Tuning of watermill-tuned.
const (
	tunedPublishers    = 8 // Publisher instances, each with its own connection
	tunedPublishers2   = 4 // goroutines publishing through each of them
	tunedSubscriptions = 8 // pull subscriptions sharing one durable consumer
	tunedMaxAckPending = 4096
)

// watermillBus moves n 512-byte messages through watermill-nats v2's
// JetStream Publisher and Subscriber on the server at url, the clock running
// from the first publish to the last acknowledged handler; latency is from
// publish to handler.
//
// watermill-default is the library's defaults: one publisher publishing
// each message synchronously, one subscription on an ephemeral consumer
// whose messages are handed over one at a time and acknowledged with a
// confirmed ack (DoubleAck). The only change is the logger: the default
// logs every message at INFO to stderr, which no benchmark would keep.
//
// watermill-tuned is what its documentation and issues suggest for
// throughput: many concurrent publishers, asynchronous acks, and several
// subscriptions sharing one durable consumer (each subscription's messages
// are handled one at a time, so parallelism needs several).
func watermillBus(ctx context.Context, system, url string, n int, tuned bool, progress io.Writer) (benchrun.Result, error) {
	res := benchrun.Result{Scenario: "bus", System: system, Baseline: true}
	logger := watermill.NopLogger{}
	topic := fmt.Sprintf("WM_%d", time.Now().UnixNano())
	subCfg := wmjs.SubscriberConfig{URL: url, Logger: logger}
	subscriptions := 1
	if tuned {
		subCfg.AckAsync = true
		subCfg.ResourceInitializer = sharedDurable("sink")
		subscriptions = tunedSubscriptions
	}
	sub, err := wmjs.NewSubscriber(subCfg)
	if err != nil {
		return res, err
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(topic); err != nil {
		return res, err
	}
	bar := benchrun.NewBar(progress, system, n)
	defer bar.Done()
	lat := benchrun.NewLatencies(n)
	var handled atomic.Int64
	done := make(chan struct{})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range subscriptions {
		msgs, err := sub.Subscribe(sctx, topic)
		if err != nil {
			return res, err
		}
		wg.Go(func() {
			for m := range msgs {
				sent, _ := strconv.ParseInt(m.Metadata.Get("sent"), 10, 64)
				m.Ack()
				lat.Add(time.Since(time.Unix(0, sent)))
				bar.Add(1)
				if handled.Add(1) == int64(n) {
					close(done)
				}
			}
		})
	}

	pubs, perPub := 1, 1
	if tuned {
		pubs, perPub = tunedPublishers, tunedPublishers2
	}
	publishers := make([]*wmjs.Publisher, pubs)
	for i := range publishers {
		p, err := wmjs.NewPublisher(wmjs.PublisherConfig{URL: url, Logger: logger})
		if err != nil {
			return res, err
		}
		defer p.Close()
		publishers[i] = p
	}
	data := fmt.Appendf(nil, `{"key":"k1","seq":1,"blob":%q}`, benchrun.Blob())
	m := benchrun.StartMeter()
	var next atomic.Int64
	var pubErr error
	var errOnce sync.Once
	var pwg sync.WaitGroup
	for _, p := range publishers {
		for range perPub {
			pwg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(n) || ctx.Err() != nil {
						return
					}
					msg := message.NewMessage(watermill.NewUUID(), data)
					msg.Metadata.Set("sent", strconv.FormatInt(time.Now().UnixNano(), 10))
					if err := p.Publish(topic, msg); err != nil {
						errOnce.Do(func() { pubErr = err })
						return
					}
				}
			})
		}
	}
	pwg.Wait()
	if pubErr != nil {
		return res, fmt.Errorf("publish: %w", pubErr)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(5 * time.Minute):
		return res, fmt.Errorf("only %d of %d handled", handled.Load(), n)
	}
	m.Stop(&res, n)
	lat.Fill(&res, nil)
	if tuned {
		res.Note = fmt.Sprintf("%d publishers × %d goroutines, async ack, %d subscriptions on one durable consumer", tunedPublishers, tunedPublishers2, tunedSubscriptions)
	} else {
		res.Note = "library defaults (logger off)"
	}
	return res, nil
}

// sharedDurable is a ResourceInitializer that gives every subscription the
// same durable consumer, so that several subscriptions share the work.
func sharedDurable(name string) wmjs.ResourceInitializer {
	return func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
		s, err := js.Stream(ctx, topic)
		if err != nil {
			return nil, nil, fmt.Errorf("stream %s: %w", topic, err)
		}
		c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: tunedMaxAckPending})
		return c, nil, err
	}
}
