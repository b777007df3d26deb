package trace_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/trace"
)

func TestBatchRoundTrip(t *testing.T) {
	now := time.Now()
	in := []trace.Record{
		{Hop: herald.HopHandle, Service: "shipping", Subscription: "schedule", EventID: "e1", Type: "shop.order.confirmed",
			Kind: envelope.KindIntegration, CausationID: "e0", CorrelationID: "o1", Time: now, Duration: 1234 * time.Microsecond,
			Outcome: "retry", Reason: "", Attempt: 3, Error: "database is locked — «ünïcode»"},
		{Hop: herald.HopRecord, Service: "orders", EventID: "e0", Type: "orders.placed", Kind: envelope.KindDomain, CorrelationID: "o1",
			Time: time.Unix(0, 0), Outcome: "ok"},
		{},
	}
	b := trace.NewBatch(0)
	for _, r := range in {
		b = trace.AppendRecord(b, r)
	}
	var out []trace.Record
	if err := trace.DecodeBatch(b, func(r trace.Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %d records, want %d", len(out), len(in))
	}
	for i := range in {
		want := in[i]
		if want.Time.IsZero() {
			want.Time = time.Unix(0, want.Time.UnixNano())
		}
		if !out[i].Time.Equal(want.Time) {
			t.Errorf("record %d: time %v, want %v", i, out[i].Time, want.Time)
		}
		out[i].Time, want.Time = time.Time{}, time.Time{}
		if out[i] != want {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, out[i], want)
		}
	}
	// Every truncation is an error, never a panic or a wrong record.
	for n := 0; n < len(b)-1; n++ {
		err := trace.DecodeBatch(b[:n], func(trace.Record) error { return nil })
		if n > 1 && err == nil {
			// a cut at a record boundary decodes fewer records: fine
			continue
		}
		if err != nil && !errors.Is(err, trace.ErrMalformed) {
			t.Fatalf("cut at %d: %v", n, err)
		}
	}
	if err := trace.DecodeBatch([]byte{9, 1, 2}, func(trace.Record) error { return nil }); !errors.Is(err, trace.ErrMalformed) {
		t.Errorf("unknown version: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(trace.AppendRecord(trace.NewBatch(0), trace.Record{Hop: "record", EventID: "x", Time: time.Unix(1, 2)}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = trace.DecodeBatch(b, func(trace.Record) error { return nil })
	})
}

func rec(id, cause string, hop herald.Hop, at int) trace.Record {
	return trace.Record{Hop: hop, Service: "s", EventID: id, Type: "t." + id, CausationID: cause, CorrelationID: "flow",
		Time: time.Unix(100, 0).Add(time.Duration(at) * time.Millisecond), Outcome: "ok"}
}

func TestBuild(t *testing.T) {
	cases := []struct {
		name    string
		recs    []trace.Record
		tree    string // "id(depth)" in walk order
		missing []string
	}{
		{"chain in any order", []trace.Record{rec("c", "b", herald.HopRecord, 3), rec("a", "", herald.HopRecord, 0),
			rec("b", "a", herald.HopTranslate, 1), rec("b", "a", herald.HopPublish, 2)}, "a0 b1 c2", nil},
		{"siblings by time", []trace.Record{rec("a", "", herald.HopRecord, 0), rec("y", "a", herald.HopRecord, 5),
			rec("x", "a", herald.HopRecord, 2)}, "a0 x1 y1", nil},
		{"gap", []trace.Record{rec("a", "", herald.HopRecord, 0), rec("c", "b", herald.HopRecord, 3)}, "a0 c0", []string{"b"}},
		{"two roots", []trace.Record{rec("a", "", herald.HopRecord, 0), rec("d", "", herald.HopRecord, 1)}, "a0 d0", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := trace.Build(c.recs)
			var got []string
			tr.Walk(func(n *trace.Node, d int) { got = append(got, n.EventID+string(rune('0'+d))) })
			if strings.Join(got, " ") != c.tree {
				t.Errorf("tree %v, want %s", got, c.tree)
			}
			if strings.Join(tr.Missing, ",") != strings.Join(c.missing, ",") {
				t.Errorf("missing %v, want %v", tr.Missing, c.missing)
			}
			var b strings.Builder
			if err := tr.Format(&b); err != nil || !strings.HasPrefix(b.String(), "flow flow:") {
				t.Errorf("format: %v\n%s", err, b.String())
			}
			if len(c.missing) > 0 && !strings.Contains(b.String(), "gap: no record of event "+c.missing[0]) {
				t.Errorf("format does not name the gap:\n%s", b.String())
			}
		})
	}
}

// stuckSink never stores anything until released: Observe must still return
// at once, dropping and counting what the buffer cannot hold.
type stuckSink struct{ release chan struct{} }

func (s stuckSink) ProvisionTrace(context.Context, time.Duration, int64) error { return nil }
func (s stuckSink) AppendTrace(ctx context.Context, _ string, _ []byte) error {
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return ctx.Err()
}

func TestObserveDropsInsteadOfBlocking(t *testing.T) {
	sink := stuckSink{release: make(chan struct{})}
	r, err := trace.NewRecorder(sink, trace.Config{Source: "x", Buffer: 10, BatchBytes: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for range n {
		r.Observe(context.Background(), herald.Observation{Hop: herald.HopRecord, Event: envelope.Envelope{ID: "e"}})
	}
	// The writer holds at most one record in its stuck batch; the buffer ten.
	if d := r.Dropped(); d < n-11 {
		t.Errorf("dropped %d of %d with a buffer of 10 and a stuck sink", d, n)
	}
	close(sink.release)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderValidates(t *testing.T) {
	sink := stuckSink{}
	if _, err := trace.NewRecorder(nil, trace.Config{Source: "x"}); err == nil {
		t.Error("nil sink accepted")
	}
	if _, err := trace.NewRecorder(sink, trace.Config{}); err == nil || !strings.Contains(err.Error(), "Source") {
		t.Errorf("no source: %v", err)
	}
	if _, err := trace.NewRecorder(sink, trace.Config{Source: "x", Buffer: -1}); err == nil {
		t.Error("negative buffer accepted")
	}
}

// TestRecordAndReadOnJetStream writes through a real embedded JetStream and
// reads the flow back by correlation id and by event id; a second flow's
// records stay out.
func TestRecordAndReadOnJetStream(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := trace.Collect(ctx, b, "x"); err == nil {
		t.Error("read before any trace stream exists: no error")
	}
	r, err := trace.NewRecorder(b, trace.Config{Source: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, flow := range []string{"f1", "f2", "f1"} {
		r.Observe(ctx, herald.Observation{Hop: herald.HopRecord, Service: "orders", Start: time.Now(),
			Event: envelope.Envelope{ID: "e" + string(rune('0'+i)), Type: "orders.placed", Kind: envelope.KindDomain, CorrelationID: flow}})
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"f1", "e2"} {
		recs, err := trace.Collect(ctx, b, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || recs[0].EventID != "e0" || recs[1].EventID != "e2" {
			t.Errorf("Collect(%s) = %+v, want e0 and e2", id, recs)
		}
	}
	if _, err := trace.Collect(ctx, b, "nope"); !errors.Is(err, trace.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}
