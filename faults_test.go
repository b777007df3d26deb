package herald_test

// The fault tests of the integration tier: a producer process, a consumer
// process and an external nats-server are SIGKILLed at random moments while
// 10,000 events flow, and every guarantee is checked from the consumer's own
// tables (never from herald's counters): every event has exactly one effect,
// nothing is missing, and each key's events took effect in order. The rig —
// the processes, the transport hooks that widen the windows a kill must
// hit, the checks — is internal/faultrig; the tests are here.
//
// Producers and consumers run as subprocesses of this test binary
// (TestFaultRole, selected by the HERALD_FAULT_ROLE variable) so that they
// can be SIGKILLed.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/faultrig"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestFaultRole is the body of the fault tests' subprocesses; it skips
// unless HERALD_FAULT_ROLE is set.
func TestFaultRole(t *testing.T) {
	spec := os.Getenv(faultrig.RoleEnv)
	if spec == "" {
		t.Skip("only runs as a subprocess of the fault tests")
	}
	var r faultrig.Role
	if err := json.Unmarshal([]byte(spec), &r); err != nil {
		t.Fatalf("%s: %v", faultrig.RoleEnv, err)
	}
	// Die with the test that started us, even if it could not kill us.
	parent := os.Getppid()
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != parent {
				fmt.Fprintln(os.Stderr, "fault role: parent died, exiting")
				os.Exit(3)
			}
		}
	}()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()
	var err error
	switch r.Role {
	case "producer":
		err = faultrig.RunProducer(ctx, r, log)
	case "consumer":
		err = faultrig.RunConsumer(ctx, r, log)
	default:
		err = fmt.Errorf("unknown role %q", r.Role)
	}
	if err != nil {
		t.Fatalf("%s: %v", r.Role, err)
	}
}

// TestProducerKilledBetweenCommitAndPublish SIGKILLs the producer process
// three times at random points while it commits 10,000 orders one
// transaction each, and restarts it to finish. At least one kill must leave
// committed events unpublished in the outbox (checked after the kill, from
// its database), or the test did not cover the window; events the broker
// stored but the dead relay had not marked are counted too (they are
// published again and deduplicated). The consumer,
// never killed, must end with exactly one effect per event, in order per key.
func TestProducerKilledBetweenCommitAndPublish(t *testing.T) {
	faultrig.Dialects(t, func(t *testing.T, dialect string) {
		r := faultrig.New(t, dialect)
		n := faultrig.Events
		pdsn, pst := r.DB("orders", faultrig.ProducerSchema)
		_, cst := r.DB("shipping", faultrig.ConsumerSchema)
		r.StartConsumer(cst, 1, nil)
		probe, _ := faultrig.NewProducer(pst, nil, r.Logger("probe")) // reads the outbox of the killed process

		role := faultrig.Role{Role: "producer", NATS: r.Server.URL(), DB: pdsn, To: n, PublishDelay: 20 * time.Millisecond}
		unpublished, unmarked := 0, 0
		for k, at := range faultrig.KillPoints(3, n/10, n*8/10, n/10) {
			p := r.Spawn(fmt.Sprintf("producer-%d", k+1), role)
			testwait.UntilReport(t, 90*time.Second, func() bool {
				return p.Exited() || faultrig.Count(t, pst, `SELECT COUNT(*) FROM placed_orders`) > at
			}, func() string {
				return fmt.Sprintf("waiting for producer run %d to commit order %d: %s", k+1, at, r.Status(pst, cst))
			})
			if p.Exited() {
				t.Fatalf("producer run %d exited before it was killed: %v\n%s", k+1, p.Err(), faultrig.Tail(p.Output(), 30))
			}
			p.Kill()
			time.Sleep(300 * time.Millisecond) // let the server finish what the dead connection sent
			committed := faultrig.Count(t, pst, `SELECT COUNT(*) FROM placed_orders`)
			if top := faultrig.Count(t, pst, `SELECT COALESCE(MAX(idx), -1) FROM placed_orders`); top != committed-1 {
				t.Fatalf("after kill %d: %d orders committed but the highest is %d: not a prefix", k+1, committed, top)
			}
			backlog, _, err := probe.OutboxStats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			stored, err := r.StreamMsgs()
			if err != nil {
				t.Fatal(err)
			}
			published := int64(committed) - backlog
			t.Logf("kill %d at order ≥%d: %d committed, %d of them unpublished in the outbox; broker holds %d, %d more than marked published",
				k+1, at, committed, backlog, stored, int64(stored)-published)
			unpublished += int(backlog)
			unmarked += max(int(int64(stored)-published), 0)
			role.From = committed
		}
		p := r.Spawn("producer-final", role)
		if err := p.Wait(3 * time.Minute); err != nil {
			t.Fatalf("final producer run: %v\n%s\nstatus: %s", err, faultrig.Tail(p.Output(), 30), r.Status(pst, cst))
		}
		r.WaitSettled(pst, cst, n, 2*time.Minute)
		time.Sleep(500 * time.Millisecond) // room for a late duplicate
		r.CheckEffects(pst, cst, n)
		if got := faultrig.Count(t, pst, `SELECT COUNT(*) FROM placed_orders`); got != n {
			t.Errorf("orders placed: %d, want %d", got, n)
		}
		if unpublished == 0 {
			t.Errorf("no kill left a committed event unpublished: the commit → publish window was not covered")
		}
		t.Logf("window covered: %d committed events were unpublished at a kill; %d stored events were not yet marked published (republished, deduplicated)",
			unpublished, unmarked)
	})
}

// TestConsumerKilledAfterCommitBeforeAck SIGKILLs the consumer process three
// times at random points while it consumes 10,000 events, and restarts it.
// After each kill the broker's count of acknowledged events is compared
// with the effects committed in the consumer's table: committed effects the
// broker has no ack for are the window. The restarted consumer reports each
// redelivered event whose effect an earlier run committed (the probe); at
// least one must have come back, and still every event has exactly one
// effect, none is missing, and each key is in order.
func TestConsumerKilledAfterCommitBeforeAck(t *testing.T) {
	faultrig.Dialects(t, func(t *testing.T, dialect string) {
		r := faultrig.New(t, dialect)
		n := faultrig.Events
		_, pst := r.DB("orders", faultrig.ProducerSchema)
		cdsn, cst := r.DB("shipping", faultrig.ConsumerSchema)
		// Provision the stream and the durable consumer up front, so that
		// the broker's view of the subscription exists from the start.
		prov, err := faultrig.Connect(context.Background(), r.Server.URL(), "provision", r.Logger("provision"))
		if err != nil {
			t.Fatal(err)
		}
		ps, _ := faultrig.NewConsumer(cst, prov, r.Logger("provision"), 0, nil)
		if err := ps.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ps.Close()
		prov.Close()

		producer := r.StartProducer(pst, nil)
		produced := make(chan error, 1)
		go func() { produced <- faultrig.PlaceOrders(context.Background(), producer, pst, 0, n, 20, 0) }()

		stop := filepath.Join(r.Dir, "stop-consumer")
		role := faultrig.Role{Role: "consumer", NATS: r.Server.URL(), DB: cdsn, Stop: stop, AckDelay: 500 * time.Millisecond}
		effects := func() int { return faultrig.Count(t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`) }
		unacked := 0
		for k, at := range faultrig.KillPoints(3, n/10, n*8/10, n/10) {
			role.Gen = k + 1
			p := r.Spawn(fmt.Sprintf("consumer-%d", k+1), role)
			testwait.UntilReport(t, 90*time.Second, func() bool { return p.Exited() || effects() > at }, func() string {
				return fmt.Sprintf("waiting for consumer run %d to reach %d effects: %s", k+1, at, r.Status(pst, cst))
			})
			if p.Exited() {
				t.Fatalf("consumer run %d exited before it was killed: %v\n%s", k+1, p.Err(), faultrig.Tail(faultrig.FilterProbe(p.Output()), 30))
			}
			p.Kill()
			time.Sleep(300 * time.Millisecond) // let the server take what the dead connection sent
			committed := effects()
			ci, err := r.ConsumerInfo()
			if err != nil {
				t.Fatal(err)
			}
			// Every event up to Delivered.Stream was delivered (one type
			// on the stream, deliver-all); NumAckPending of them are not
			// acknowledged.
			acked := int(ci.Delivered.Stream) - ci.NumAckPending
			t.Logf("kill %d at ≥%d effects: %d committed, broker has %d acknowledged (%d delivered, %d unacknowledged): %d committed but not acknowledged",
				k+1, at, committed, acked, ci.Delivered.Stream, ci.NumAckPending, committed-acked)
			if committed < acked {
				t.Errorf("kill %d: the broker has %d acks but only %d effects are committed: an event was acknowledged before its effect committed", k+1, acked, committed)
			}
			unacked += max(committed-acked, 0)
		}
		role.Gen = 4
		p := r.Spawn("consumer-final", role)
		if err := <-produced; err != nil {
			t.Fatal(err)
		}
		if err := faultrig.WaitOutbox(context.Background(), producer, time.Minute); err != nil {
			t.Fatal(err)
		}
		r.WaitSettled(pst, cst, n, 2*time.Minute)
		time.Sleep(500 * time.Millisecond) // room for a late duplicate
		if err := os.WriteFile(stop, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(time.Minute); err != nil {
			t.Errorf("final consumer run: %v\n%s", err, faultrig.Tail(faultrig.FilterProbe(p.Output()), 30))
		}
		r.CheckEffects(pst, cst, n)
		pc, perRun := r.ProbeCounts()
		if unacked == 0 {
			t.Errorf("no kill found a committed but unacknowledged event: the commit → ack window was not covered")
		}
		if pc["absorbed"] == 0 {
			t.Errorf("no event committed by a killed run was redelivered (probe: %v): the inbox was not exercised", pc)
		}
		if pc["error"] > 0 {
			t.Errorf("the probe failed to look up %d redeliveries", pc["error"])
		}
		t.Logf("window covered: %d committed effects had no ack at a kill; redelivered after a kill and absorbed by the inbox: %d; redelivered, never committed: %d; redelivered within a run: %d (%s)",
			unacked, pc["absorbed"], pc["uncommitted"], pc["same-run"], perRun)
	})
}

// TestBrokerRestartUnderLoad SIGKILLs and restarts the nats-server twice
// while an in-process producer commits 10,000 events (50 per transaction,
// paced so that production spans both restarts) and an in-process consumer
// takes them. The first kill lands as an event arrives at the consumer (the
// server is sending the next ones), the second as the relay starts
// publishing a batch (its events are on the wire). The relay must retry what
// the dead server did not acknowledge and the consumer must resume; nothing
// may be lost, nothing take effect twice, and each key stays in order. From
// each restart on, the consumer's effects are sampled every 20ms: it may not
// go faultMaxStall without progress while the stream holds events for it.
func TestBrokerRestartUnderLoad(t *testing.T) {
	faultrig.Dialects(t, func(t *testing.T, dialect string) { brokerRestartUnderLoad(t, dialect, false) })
}

// TestBrokerRestartDefaultAckWait is TestBrokerRestartUnderLoad with the
// consumer on herald's default ack wait (10s), as services run: a consumer
// that held new events for the whole ack wait after a reconnect would stall
// for longer than faultMaxStall. Only a hold for events that the dying
// server had delivered and the consumer never received may take longer
// (they come back after the ack wait, and the later events of their keys
// must wait for them); the test tells those by their arrival.
func TestBrokerRestartDefaultAckWait(t *testing.T) {
	faultrig.Dialects(t, func(t *testing.T, dialect string) { brokerRestartUnderLoad(t, dialect, true) })
}

// faultMaxStall bounds the longest time a consumer may make no progress
// after a broker restart while events wait for it: recovery takes seconds.
const faultMaxStall = 5 * time.Second

func brokerRestartUnderLoad(t *testing.T, dialect string, defaultAckWait bool) {
	r := faultrig.New(t, dialect)
	r.DefaultAckWait = defaultAckWait
	r.Arrivals = &faultrig.Arrivals{}
	ackWait := 2 * time.Second // faultrig.NewConsumer's, for the log
	// The producer's pause between transactions: production must outlast
	// the first restart and the consumer's recovery from it, or the second
	// kill (as the relay publishes) never comes. With the long ack wait a
	// recovery that waits for events lost on the wire takes ~10s.
	pace := 15 * time.Millisecond
	if defaultAckWait {
		ackWait = 10 * time.Second // herald's
		pace = 150 * time.Millisecond
	}
	n := faultrig.Events
	const perDo = 50
	_, pst := r.DB("orders", faultrig.ProducerSchema)
	_, cst := r.DB("shipping", faultrig.ConsumerSchema)
	trigger := make(chan struct{}, 1)
	fire := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	// Kill 1: the consumer's transport tells when event arrive reaches it.
	var arrive atomic.Int64
	arrive.Store(-1)
	r.StartConsumer(cst, 1, func(e faultrig.Event) {
		if int64(e.Index) == arrive.Load() {
			fire()
		}
	})
	// Kill 2: the relay's transport tells when a batch starts out.
	var armed atomic.Bool
	producer := r.StartProducer(pst, func(size int) {
		if size >= perDo && armed.CompareAndSwap(true, false) {
			fire()
		}
	})
	placed := func() int { return faultrig.Count(t, pst, `SELECT COUNT(*) FROM placed_orders`) }
	effects := func() int { return faultrig.Count(t, cst, `SELECT COUNT(DISTINCT event_id) FROM effects`) }

	progress := r.SampleProgress(cst)
	produced := make(chan error, 1)
	go func() {
		produced <- faultrig.PlaceOrders(context.Background(), producer, pst, 0, n, perDo, pace)
	}()

	var ups, kills []time.Time // restarts, and the kills after them
	for k := range 2 {
		var what string
		if k == 0 {
			at := n/5 + rand.N(n/5)
			what = fmt.Sprintf("as event %d reached the consumer", at)
			arrive.Store(int64(at))
		} else {
			at := n/2 + rand.N(n/5)
			what = fmt.Sprintf("as the relay published a batch after order %d", at)
			testwait.UntilReport(t, 90*time.Second, func() bool { return placed() >= at },
				func() string { return fmt.Sprintf("waiting for %d orders placed: %s", at, r.Status(pst, cst)) })
			armed.Store(true)
		}
		select {
		case <-trigger:
		case <-time.After(90 * time.Second):
			t.Fatalf("kill %d (%s) never triggered: %s", k+1, what, r.Status(pst, cst))
		}
		r.Server.Kill()
		if k > 0 {
			kills = append(kills, time.Now())
		}
		pk, before := placed(), effects()
		backlog, _, _ := producer.OutboxStats(context.Background())
		down := time.Duration(300+rand.N(1200)) * time.Millisecond
		time.Sleep(down)
		p, e := placed(), effects()
		r.Server.Restart()
		up := time.Now()
		ups = append(ups, up)
		var stored uint64
		_ = testwait.For(10*time.Second, "JetStream to recover", func() bool {
			var err error
			stored, err = r.StreamMsgs()
			return err == nil
		})
		// The relay and the consumer must resume: wait for the next
		// stored event and the next effect.
		var relayUp, consumerUp time.Duration
		testwait.UntilReport(t, time.Minute, func() bool {
			if s, err := r.StreamMsgs(); relayUp == 0 && err == nil && (s > stored || s >= uint64(n)) {
				relayUp = time.Since(up)
			}
			if consumerUp == 0 && (effects() > e || effects() >= n) {
				consumerUp = time.Since(up)
			}
			return relayUp > 0 && consumerUp > 0
		}, func() string {
			return fmt.Sprintf("waiting for the relay and the consumer to resume after restart %d: %s", k+1, r.Status(pst, cst))
		})
		t.Logf("restart %d: killed %s; %d placed, %d effects, outbox backlog %d; down %v, during which %d were placed and %d took effect; after the restart the relay stored its next event in %v, the consumer took its next in %v",
			k+1, what, pk, before, backlog, down, p-pk, e-before, relayUp.Round(time.Millisecond), consumerUp.Round(time.Millisecond))
		if before >= n {
			t.Errorf("restart %d came after the consumer finished: not under load", k+1)
		}
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	if err := faultrig.WaitOutbox(context.Background(), producer, 2*time.Minute); err != nil {
		t.Fatalf("%v\nstatus: %s", err, r.Status(pst, cst))
	}
	r.WaitSettled(pst, cst, n, 2*time.Minute)
	progress.Halt()
	kills = append(kills, time.Now())
	for k, up := range ups {
		stall, at := progress.LongestStall(up, kills[k])
		until := "all were taken"
		if k+1 < len(ups) {
			until = "the next kill"
		}
		from := ""
		if stall > 0 {
			from = fmt.Sprintf(" (from %v after the restart)", at.Sub(up).Round(time.Millisecond))
		}
		t.Logf("restart %d: the consumer's longest time without progress while events waited for it, from the restart until %s: %v%s",
			k+1, until, stall.Round(time.Millisecond), from)
		if stall < faultMaxStall {
			continue
		}
		// Events the dying server had delivered but the consumer never
		// received come back only after the ack wait; until then the
		// consumer must hold the later events of their keys. That wait is
		// no fault, if it ends as they are back.
		end := at.Add(stall)
		if lost, last := r.Arrivals.LostBetween(at, end.Add(time.Second)); lost > 0 && end.Sub(last) < 700*time.Millisecond {
			t.Logf("restart %d: the stall ended as %d events the consumer had never received came back after their ack wait (%v): lost on the wire, a hold it needed",
				k+1, lost, ackWait)
			continue
		}
		t.Errorf("restart %d: the consumer made no progress for %v while events waited for it; want under %v", k+1, stall.Round(time.Millisecond), faultMaxStall)
	}
	time.Sleep(500 * time.Millisecond) // room for a late duplicate
	r.CheckEffects(pst, cst, n)
	stored, _ := r.StreamMsgs()
	t.Logf("stream holds %d events for %d placed", stored, n)
}
