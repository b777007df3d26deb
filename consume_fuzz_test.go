package herald_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/metrics"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/trace"
)

// fuzzed is the event of the consumer-path fuzz test.
type fuzzed struct {
	ID string `json:"id"`
}

var fuzzPlaced = herald.Integration[fuzzed]("shop.fuzz.placed", herald.KeyBy(func(e fuzzed) string { return e.ID }))

// consumerRig is a subscription on an embedded JetStream, observed by the
// observers herald ships (Prometheus metrics, the causal trace) plus one
// that panics on every call, and a raw client that publishes whatever a
// test gives it on the subscription's subject.
type consumerRig struct {
	svc     *herald.Service
	st      *store.Store
	js      jetstream.JetStream
	cons    jetstream.Consumer
	subject string
	panics  atomic.Int64 // calls of the panicking observers

	mu     sync.Mutex
	n      int
	used   map[string]bool // event ids published so far: a reuse is absorbed as a duplicate
	lastDL int64           // the newest dead letter checked
}

func newConsumerRig(tb testing.TB) *consumerRig {
	tb.Helper()
	ctx := context.Background()
	prefix := "f" + randHex(4)
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithPrefix(prefix), natsjs.WithLogger(quiet))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	st := testdb.SQLite(tb)
	if _, err := st.DB().Exec(`CREATE TABLE effects (event_id TEXT PRIMARY KEY)`); err != nil {
		tb.Fatal(err)
	}
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	rec, err := trace.NewRecorder(b, trace.Config{Source: "fuzz", Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	if err := rec.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rec.Close() })
	r := &consumerRig{st: st, subject: prefix + ".int." + fuzzPlaced.Name(), used: map[string]bool{}}
	boom := herald.ObserverFunc(func(context.Context, herald.Observation) {
		r.panics.Add(1)
		panic("an observer's bug")
	})
	r.svc, err = herald.New("shipping", herald.WithStore(st), herald.WithBroker(b), herald.WithLogger(quiet),
		herald.WithObserver(m), herald.WithObserver(rec), herald.WithObserver(boom), herald.WithObserver(inlineBoom{&r.panics}))
	if err != nil {
		tb.Fatal(err)
	}
	m.Watch(r.svc)
	err = herald.Subscribe(r.svc, fuzzPlaced, "track", func(ctx context.Context, tx herald.Tx, e fuzzed) error {
		ev, _ := herald.EventFrom(ctx)
		_, err := tx.SQL().ExecContext(ctx, `INSERT INTO effects (event_id) VALUES (?)`, ev.ID)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.svc.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.svc.Close() })
	nc, err := nats.Connect(b.URL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		tb.Fatal(err)
	}
	stream := strings.ToUpper(prefix) + "_INT"
	if r.cons, err = r.js.Consumer(ctx, stream, natsjs.ConsumerName("shipping", "track")); err != nil {
		tb.Fatal(err)
	}
	return r
}

// inlineBoom is an inline observer that panics on every call.
type inlineBoom struct{ calls *atomic.Int64 }

func (b inlineBoom) Observe(context.Context, herald.Observation) {
	b.calls.Add(1)
	panic("an inline observer's bug")
}

func (inlineBoom) Inline() {}

// validMsg is a well-formed event of the subscription's contract.
func (r *consumerRig) validMsg(id, key string) *nats.Msg {
	e := &envelope.Envelope{ID: id, Type: fuzzPlaced.Name(), Version: 1, Kind: envelope.KindIntegration, Source: "fuzz",
		Key: key, Time: time.Now(), DataContentType: "application/json", Data: []byte(fmt.Sprintf(`{"id":%q}`, key))}
	h, body := envelope.ToBinary(e)
	m := nats.NewMsg(r.subject)
	for k, v := range h {
		m.Header[k] = []string{v}
	}
	m.Data = body
	return m
}

// check publishes m, then a valid event, and fails t unless both are
// settled — acknowledged after the consumer's commit: handled, absorbed as a
// duplicate, or dead-lettered with a reason — and the valid one took effect.
func (r *consumerRig) check(t *testing.T, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	r.mu.Lock()
	r.n++
	n := r.n
	reused := r.used[m.Header.Get(envelope.HeaderID)]
	r.used[m.Header.Get(envelope.HeaderID)] = true
	r.mu.Unlock()
	effectsBefore := testdb.Count(t, r.st, "effects", "")

	sent := 0
	ack, err := r.js.PublishMsg(ctx, m)
	switch {
	case err != nil:
		t.Logf("the server refused the message (%v): only the valid event follows", err)
	case !ack.Duplicate:
		sent++
	}
	validID := envelope.NewID(time.Now())
	vack, err := r.js.PublishMsg(ctx, r.validMsg(validID, fmt.Sprintf("valid-%d", n)))
	if err != nil {
		t.Fatalf("publish the valid event: %v", err)
	}
	sent++

	var info *jetstream.ConsumerInfo
	testwait.UntilReport(t, 30*time.Second, func() bool {
		var err error
		info, err = r.cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.AckFloor.Stream >= vack.Sequence && info.NumAckPending == 0
	}, func() string {
		return fmt.Sprintf("the pipeline is wedged: ack floor %d, want %d; %d unacknowledged, %d pending",
			info.AckFloor.Stream, vack.Sequence, info.NumAckPending, info.NumPending)
	})
	var got int
	if err := r.st.DB().QueryRow(`SELECT COUNT(*) FROM effects WHERE event_id = ?`, validID).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 1 {
		t.Fatalf("the valid event after the fuzzed one took effect %d times", got)
	}
	// Only the dead letters since the last check: listing all of them
	// made each input slower than the one before.
	rows, err := r.st.DB().QueryContext(ctx, `SELECT id, reason, last_error FROM herald_dead_letters WHERE id > ? ORDER BY id`, r.lastDL)
	if err != nil {
		t.Fatal(err)
	}
	newDLs := 0
	for rows.Next() {
		var id int64
		var reason, lastErr string
		if err := rows.Scan(&id, &reason, &lastErr); err != nil {
			t.Fatal(err)
		}
		if reason == "" || lastErr == "" {
			t.Fatalf("dead letter %d without a reason: %q, %q", id, reason, lastErr)
		}
		newDLs++
		r.lastDL = id
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	settled := newDLs + testdb.Count(t, r.st, "effects", "") - effectsBefore
	if !reused && settled != sent {
		t.Fatalf("%d messages went in, %d came out handled or dead-lettered", sent, settled)
	}
	if r.panics.Load() == 0 {
		t.Fatal("the panicking observers were never called")
	}
}

// FuzzConsumerPath sends arbitrary headers (names, values that are not
// UTF-8, very long, duplicated, in other cases) and bodies to a running
// subscription through a real broker. Every message must end handled or
// dead-lettered with a reason, and a valid event published after it must be
// handled: no message can wedge the consumer, whatever its observers do.
//
// Headers are given as lines "name: value"; the value may hold any bytes.
func FuzzConsumerPath(f *testing.F) {
	r := newConsumerRig(f)
	valid := r.validMsg(envelope.NewID(time.Now()), "seed")
	var base []string
	for k, vs := range valid.Header {
		base = append(base, k+": "+vs[0])
	}
	with := func(k, v string) string {
		lines := []string{}
		for _, l := range base {
			if !strings.HasPrefix(l, k+": ") && !strings.HasPrefix(l, envelope.HeaderID+": ") {
				lines = append(lines, l)
			}
		}
		lines = append(lines, envelope.HeaderID+": "+envelope.NewID(time.Now()))
		if v != "\x00drop" {
			lines = append(lines, k+": "+v)
		}
		return strings.Join(lines, "\n")
	}
	body := valid.Data
	seeds := []struct{ hdr, body string }{
		{with(envelope.HeaderType, "shop.fuzz.\xffplaced"), string(body)}, // the type that stopped three services
		{with(envelope.HeaderType, "shop.\xc3("), string(body)},
		{with(envelope.HeaderSource, "fuzz\xfe"), string(body)},
		{with(envelope.HeaderPartitionKey, "k\xed\xa0\x80"), string(body)},
		{with(envelope.HeaderType, "shop.other."+strings.Repeat("x", 5000)), string(body)},
		{with(envelope.HeaderType, "shop.made.up"), string(body)},
		{with(envelope.HeaderTraceParent, "00-zz"), string(body)},
		{with(envelope.HeaderType, "\x00drop"), string(body)},
		{with("CE-TYPE", "shop.fuzz.placed") + "\nce-type: shop.fuzz.placed", string(body)},
		{with("Ce-Type", "shop.other") + "\nCE-type: shop.fuzz.placed", string(body)},
		{with(envelope.HeaderVersion, "7"), string(body)},
		{with(envelope.HeaderKind, "notification"), string(body)},
		{with(envelope.HeaderSpecVersion, "0.3"), string(body)},
		{with(envelope.HeaderType, fuzzPlaced.Name()), `{"id": 5}`},
		{with(envelope.HeaderType, fuzzPlaced.Name()), "\xff\xfe"},
		{with(envelope.HeaderType, fuzzPlaced.Name()), ""},
		{"", "no headers at all"},
		{"x-" + strings.Repeat("h", 300) + ": " + strings.Repeat("\xff", 20000), "long"},
	}
	for _, s := range seeds {
		f.Add(s.hdr, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, hdr string, body []byte) {
		m := nats.NewMsg(r.subject)
		for line := range strings.SplitSeq(hdr, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok || k == "" || strings.ContainsAny(k, ":\r\n \t") || strings.EqualFold(k, jetstream.MsgIDHeader) ||
				strings.HasPrefix(strings.ToLower(k), "nats-") {
				continue // names NATS cannot carry or acts on itself; the server's own tests cover those
			}
			m.Header[k] = append(m.Header[k], strings.NewReplacer("\r", "", "\n", "").Replace(v))
		}
		m.Data = body
		r.check(t, m)
	})
}
