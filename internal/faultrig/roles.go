package faultrig

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/testwait"
)

// RoleEnv holds the JSON Role of a subprocess.
const RoleEnv = "HERALD_FAULT_ROLE"

// Role is what a subprocess runs, passed as JSON in RoleEnv.
type Role struct {
	Role string `json:"role"` // "producer" or "consumer"
	NATS string `json:"nats"` // server URL
	DB   string `json:"db"`   // SQLite file or PostgreSQL URL
	// producer: orders From..To-1, one per transaction
	From         int           `json:"from,omitempty"`
	To           int           `json:"to,omitempty"`
	PublishDelay time.Duration `json:"publish_delay,omitempty"`
	// consumer: run number, stop file, ack delay
	Gen      int           `json:"gen,omitempty"`
	Stop     string        `json:"stop,omitempty"`
	AckDelay time.Duration `json:"ack_delay,omitempty"`
}

// RunProducer is the producer role: it places orders From..To-1, one per
// transaction, and waits until the outbox is drained.
func RunProducer(ctx context.Context, r Role, log *slog.Logger) error {
	st, err := OpenStore(ctx, r.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := ProducerSchema(ctx, st); err != nil {
		return err
	}
	b, err := Connect(ctx, r.NATS, "fault-producer", log)
	if err != nil {
		return err
	}
	defer b.Close()
	var br broker.Broker = b
	if r.PublishDelay > 0 {
		br = &SlowBroker{Broker: b, delay: r.PublishDelay}
	}
	svc, err := NewProducer(st, br, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Close()
	fmt.Printf("producer: placing orders %d..%d\n", r.From, r.To-1)
	if err := PlaceOrders(ctx, svc, st, r.From, r.To, 1, 0); err != nil {
		return err
	}
	fmt.Println("producer: all committed, waiting for the outbox to drain")
	if err := WaitOutbox(ctx, svc, 3*time.Minute); err != nil {
		return err
	}
	fmt.Println("producer: done")
	return nil
}

// RunConsumer is the consumer role: run Gen of the shipping service, with
// acks AckDelay late, until the file Stop exists.
func RunConsumer(ctx context.Context, r Role, log *slog.Logger) error {
	st, err := OpenStore(ctx, r.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := ConsumerSchema(ctx, st); err != nil {
		return err
	}
	b, err := Connect(ctx, r.NATS, fmt.Sprintf("fault-consumer-%d", r.Gen), log)
	if err != nil {
		return err
	}
	defer b.Close()
	probe := &Probe{Broker: b, st: st, gen: r.Gen, report: true, ackDelay: r.AckDelay}
	svc, err := NewConsumer(st, probe, log, r.Gen, nil)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("consumer: run %d consuming\n", r.Gen)
	// The test kills this process, or creates the stop file; the test
	// binary's -test.timeout bounds the wait.
	if err := testwait.For(10*time.Minute, "the stop file", func() bool {
		_, err := os.Stat(r.Stop)
		return err == nil
	}); err != nil {
		return err
	}
	fmt.Println("consumer: stop file found, closing")
	return svc.Close()
}
