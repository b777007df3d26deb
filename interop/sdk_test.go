package interop_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/internal/testdb"
	"github.com/heraldhq/herald/internal/testwait"
	"github.com/heraldhq/herald/store"
)

var quiet = slog.New(slog.DiscardHandler)

// trending is what an analytics service in another language publishes.
type trending struct {
	Product string `json:"product"`
	Count   int    `json:"count"`
}

var productTrending = herald.Integration[trending]("shop.product.trending",
	herald.KeyBy(func(p trending) string { return p.Product }))

// system is herald on an embedded JetStream, with a plain NATS connection
// for the SDK.
type system struct {
	b      *natsjs.Broker
	nc     *nats.Conn
	prefix string
}

func newSystem(t *testing.T) *system {
	t.Helper()
	ctx := context.Background()
	var r [4]byte
	_, _ = rand.Read(r[:])
	prefix := "t" + hex.EncodeToString(r[:])
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithPrefix(prefix),
		natsjs.WithLogger(quiet))
	must(t, err)
	t.Cleanup(func() { b.Close() })
	nc, err := nats.Connect(b.URL())
	must(t, err)
	t.Cleanup(nc.Close)
	return &system{b: b, nc: nc, prefix: prefix}
}

// stream is the JetStream stream of kind's events ("INT" or "NTF").
func (s *system) stream(kind string) string { return strings.ToUpper(s.prefix) + "_" + kind }

// received is what a herald handler got.
type received struct {
	env envelope.Envelope
	val trending
}

// sink is a herald service subscribed to productTrending.
type sink struct {
	svc *herald.Service
	mu  sync.Mutex
	got map[string]received // by event id
}

func newSink(t *testing.T, s *system) *sink {
	t.Helper()
	k := &sink{got: map[string]received{}}
	svc, err := herald.New("catalog", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(s.b), herald.WithLogger(quiet))
	must(t, err)
	must(t, herald.Subscribe(svc, productTrending, "trending", func(ctx context.Context, tx herald.Tx, p trending) error {
		e, _ := herald.EventFrom(ctx)
		k.mu.Lock()
		k.got[e.ID] = received{e, p}
		k.mu.Unlock()
		return nil
	}, herald.AckWait(2*time.Second)))
	must(t, svc.Start(context.Background())) // provisions the streams the SDK then finds
	t.Cleanup(func() { svc.Close() })
	k.svc = svc
	return k
}

func (k *sink) wait(t *testing.T, ids ...string) map[string]received {
	t.Helper()
	testwait.Until(t, 20*time.Second, "the handler to get "+strings.Join(ids, ", "), func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		for _, id := range ids {
			if _, ok := k.got[id]; !ok {
				return false
			}
		}
		return true
	})
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.got)
}

// sdkClient is a CloudEvents SDK client publishing on subject.
func sdkClient(t *testing.T, s *system, subject string) cloudevents.Client {
	t.Helper()
	sender, err := cejs.NewSenderFromConn(s.nc, s.stream("INT"), subject, nil)
	must(t, err)
	c, err := cloudevents.NewClient(sender)
	must(t, err)
	return c
}

var t0 = time.Date(2024, 5, 17, 9, 30, 15, 123456789, time.UTC)

// plainEvent is what any CloudEvents producer sends: id, source, type,
// time and JSON data, no herald extension.
func plainEvent(t *testing.T, id string, data any) event.Event {
	t.Helper()
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/analytics")
	ev.SetType("shop.product.trending")
	ev.SetTime(t0)
	must(t, ev.SetData(cloudevents.ApplicationJSON, data))
	return ev
}

func send(t *testing.T, ctx context.Context, c cloudevents.Client, ev event.Event) {
	t.Helper()
	if res := c.Send(ctx, ev); cloudevents.IsUndelivered(res) {
		t.Fatalf("send %s: %v", ev.ID(), res)
	}
}

// TestSDKToHerald: events the SDK sends in binary mode with herald's
// extensions, in plain binary mode and in structured mode (the SDK's,
// without a content-type header, and one with content-type
// application/cloudevents+json) reach the handler with their attributes.
func TestSDKToHerald(t *testing.T) {
	s := newSystem(t)
	k := newSink(t, s)
	subject := s.prefix + ".int.shop.product.trending"
	c := sdkClient(t, s, subject)
	ctx := context.Background()

	ext := plainEvent(t, "sdk-binary-ext", trending{"p-1", 1})
	ext.SetExtension("heraldversion", 1)
	ext.SetExtension("heraldkind", "integration")
	ext.SetExtension("partitionkey", "p-1")
	ext.SetExtension("correlationid", "flow-1")
	send(t, binding.WithForceBinary(ctx), c, ext)

	plain := plainEvent(t, "sdk-binary-plain", trending{"p-2", 2})
	send(t, binding.WithForceBinary(ctx), c, plain)

	structured := plainEvent(t, "sdk-structured", trending{"p-3", 3})
	structured.SetExtension("partitionkey", "p-3")
	send(t, binding.WithForceStructured(ctx), c, structured)

	// A structured-mode event as other SDKs send it, with its content-type.
	withCT := plainEvent(t, "structured-content-type", trending{"p-4", 4})
	withCT.SetDataSchema("https://example.com/schemas/shop.product.trending/v1")
	body, err := json.Marshal(withCT)
	must(t, err)
	m := nats.NewMsg(subject)
	m.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	m.Data = body
	js, err := s.nc.JetStream()
	must(t, err)
	_, err = js.PublishMsg(m)
	must(t, err)

	got := k.wait(t, "sdk-binary-ext", "sdk-binary-plain", "sdk-structured", "structured-content-type")
	tests := []struct {
		id, key, corr string
		val           trending
	}{
		{"sdk-binary-ext", "p-1", "flow-1", trending{"p-1", 1}},
		{"sdk-binary-plain", "", "", trending{"p-2", 2}},
		{"sdk-structured", "p-3", "", trending{"p-3", 3}},
		{"structured-content-type", "", "", trending{"p-4", 4}},
	}
	for _, tc := range tests {
		r := got[tc.id]
		e := r.env
		switch {
		case r.val != tc.val:
			t.Errorf("%s: handler got %+v, want %+v", tc.id, r.val, tc.val)
		case e.Type != "shop.product.trending" || e.Version != 1 || e.Kind != envelope.KindIntegration || e.Source != "/analytics":
			t.Errorf("%s: envelope %+v", tc.id, e)
		case !e.Time.Equal(t0) || e.Key != tc.key || e.CorrelationID != tc.corr || e.DataContentType != "application/json":
			t.Errorf("%s: time %s, key %q, correlation %q, content type %q", tc.id, e.Time, e.Key, e.CorrelationID, e.DataContentType)
		}
	}
}

// TestSDKEventsThatCannotBeTakenAreDeadLettered: a plain event whose data
// does not match the contract's JSON Schema, an unknown type, a version
// the subscription does not take, an event without time and a batch are
// dead letters whose reason names what was wrong, and which name the id,
// type and version the message carried. Good events keep flowing.
func TestSDKEventsThatCannotBeTakenAreDeadLettered(t *testing.T) {
	s := newSystem(t)
	k := newSink(t, s)
	subject := s.prefix + ".int.shop.product.trending"
	c := sdkClient(t, s, subject)
	ctx := binding.WithForceBinary(context.Background())

	send(t, ctx, c, plainEvent(t, "wrong-type", map[string]any{"product": "p-9", "count": "three"}))
	send(t, ctx, c, plainEvent(t, "missing-field", map[string]any{"count": 3}))
	unknown := plainEvent(t, "unknown-type", trending{"p-1", 1})
	unknown.SetType("shop.product.unknown")
	send(t, ctx, c, unknown)
	newer := plainEvent(t, "newer-version", trending{"p-1", 1})
	newer.SetDataSchema("urn:shop:product.trending:v2")
	send(t, ctx, c, newer)
	noTime := plainEvent(t, "no-time", trending{"p-1", 1})
	noTime.SetTime(time.Time{})
	send(t, ctx, c, noTime)
	batch := nats.NewMsg(subject)
	batch.Header.Set("content-type", envelope.MediaTypeBatch)
	batch.Data = []byte(`[{"specversion":"1.0","id":"in-a-batch"}]`)
	js, err := s.nc.JetStream()
	must(t, err)
	_, err = js.PublishMsg(batch)
	must(t, err)
	send(t, ctx, c, plainEvent(t, "good", trending{"p-1", 1}))
	k.wait(t, "good")

	want := []struct {
		id, typ     string
		version     int
		reason, err string
	}{
		{"wrong-type", "shop.product.trending", 1, store.ReasonMalformed, "at '/count': got string, want integer"},
		{"missing-field", "shop.product.trending", 1, store.ReasonMalformed, "missing property 'product'"},
		{"unknown-type", "shop.product.unknown", 1, store.ReasonUnknownType, `type "shop.product.unknown"`},
		{"newer-version", "shop.product.trending", 2, store.ReasonVersion, "version 2 is newer than 1"},
		{"no-time", "shop.product.trending", 1, store.ReasonMalformed, "no header ce-time"},
		{"", "", 0, store.ReasonMalformed, "batch content mode is not supported"},
	}
	var dls []herald.DeadLetter
	testwait.Until(t, 20*time.Second, "a dead letter of each", func() bool {
		var err error
		dls, err = k.svc.DeadLetters(context.Background(), herald.DeadLetterFilter{})
		must(t, err)
		return len(dls) >= len(want)
	})
	if len(dls) != len(want) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(want))
	}
	for _, w := range want {
		i := slices.IndexFunc(dls, func(d herald.DeadLetter) bool { return strings.Contains(d.LastError, w.err) })
		if i < 0 {
			t.Errorf("no dead letter says %q; they say %q", w.err, lastErrors(dls))
			continue
		}
		d := dls[i]
		if d.EventID != w.id || d.Type != w.typ || d.Version != w.version || d.Reason != w.reason {
			t.Errorf("dead letter %q names %q %q v%d (%s), want %q %q v%d (%s)", d.LastError, d.EventID, d.Type, d.Version, d.Reason,
				w.id, w.typ, w.version, w.reason)
		}
	}
	// The event whose data does not match cannot be replayed as it is.
	i := slices.IndexFunc(dls, func(d herald.DeadLetter) bool { return d.EventID == "wrong-type" })
	if _, err := k.svc.ReplayDeadLetters(context.Background(), herald.DeadLetterFilter{IDs: []int64{dls[i].ID}}); err == nil ||
		!strings.Contains(err.Error(), "/count") {
		t.Errorf("replay of the mismatching event: %v", err)
	}
}

func lastErrors(dls []herald.DeadLetter) []string {
	var out []string
	for _, d := range dls {
		out = append(out, d.LastError)
	}
	return out
}

// placed is a domain event of the producer, confirmed its integration
// event, mail its notification.
type placed struct {
	OrderID string `json:"order_id"`
}

type confirmed struct {
	OrderID string `json:"order_id"`
}

type mail struct {
	OrderID string `json:"order_id"`
	To      string `json:"to"`
}

var (
	orderPlaced    = herald.Domain[placed]("orders.placed")
	orderConfirmed = herald.Integration[confirmed]("shop.order.confirmed", herald.Version(3),
		herald.KeyBy(func(c confirmed) string { return c.OrderID }))
	orderMail = herald.Notification[mail]("shop.order.mail", herald.Version(2))
)

// sdkReceive collects what an SDK consumer of subject receives.
func sdkReceive(t *testing.T, s *system, stream, subject string) <-chan event.Event {
	t.Helper()
	cons, err := cejs.NewConsumerFromConn(s.nc, stream, subject, nil, nil)
	must(t, err)
	c, err := cloudevents.NewClient(cons)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan event.Event, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.StartReceiver(ctx, func(ev event.Event) { out <- ev })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return out
}

// TestHeraldToSDK: an integration and a notification event a herald service
// publishes read back in the SDK with every attribute and extension,
// equal to what a herald consumer decodes of the same message, and
// event.Validate passes.
func TestHeraldToSDK(t *testing.T) {
	s := newSystem(t)
	ctx := context.Background()
	orders, err := herald.New("orders", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(s.b), herald.WithLogger(quiet))
	must(t, err)
	must(t, herald.Translate(orders, orderPlaced, orderConfirmed, func(_ context.Context, p placed) (confirmed, error) {
		return confirmed(p), nil
	}))
	must(t, orders.Register(orderMail))
	seen := make(chan envelope.Envelope, 4)
	consumer, err := herald.New("billing", herald.WithStore(testdb.SQLite(t)), herald.WithBroker(s.b), herald.WithLogger(quiet))
	must(t, err)
	must(t, herald.Subscribe(consumer, orderConfirmed, "bill", func(ctx context.Context, _ herald.Tx, _ confirmed) error {
		e, _ := herald.EventFrom(ctx)
		seen <- e
		return nil
	}))
	must(t, herald.Receive(consumer, orderMail, "send", func(ctx context.Context, _ herald.Tx, _ mail) error {
		e, _ := herald.EventFrom(ctx)
		seen <- e
		return nil
	}))
	must(t, consumer.Start(ctx))
	t.Cleanup(func() { consumer.Close() })
	must(t, orders.Start(ctx))
	t.Cleanup(func() { orders.Close() })

	intEvents := sdkReceive(t, s, s.stream("INT"), s.prefix+".int.shop.order.confirmed")
	ntfEvents := sdkReceive(t, s, s.stream("NTF"), s.prefix+".ntf.shop.order.mail")

	tctx := herald.WithTraceParent(herald.WithCorrelationID(ctx, "flow-7"),
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=opaque")
	must(t, orders.Do(tctx, func(tx herald.Tx) error {
		if err := herald.Record(tx, orderPlaced, placed{"o-7"}); err != nil {
			return err
		}
		return herald.Notify(tx, orderMail, mail{"o-7", "ada@example.com"})
	}))

	byType := map[string]envelope.Envelope{}
	for range 2 {
		select {
		case e := <-seen:
			byType[e.Type] = e
		case <-time.After(20 * time.Second):
			t.Fatalf("herald's consumer got %d of 2 events", len(byType))
		}
	}
	for _, tc := range []struct {
		events <-chan event.Event
		typ    string
		data   string
	}{
		{intEvents, "shop.order.confirmed", `{"order_id":"o-7"}`},
		{ntfEvents, "shop.order.mail", `{"order_id":"o-7","to":"ada@example.com"}`},
	} {
		var ev event.Event
		select {
		case ev = <-tc.events:
		case <-time.After(20 * time.Second):
			t.Fatalf("the SDK got no %s", tc.typ)
		}
		compareSDK(t, ev, byType[tc.typ], tc.data)
	}
}

// compareSDK checks that the SDK's ev has every attribute of herald's e.
func compareSDK(t *testing.T, ev event.Event, e envelope.Envelope, data string) {
	t.Helper()
	if err := ev.Validate(); err != nil {
		t.Errorf("%s: Validate: %v", ev.Type(), err)
	}
	attrs := map[string][2]string{
		"specversion":     {ev.SpecVersion(), envelope.SpecVersion},
		"id":              {ev.ID(), e.ID},
		"source":          {ev.Source(), e.Source},
		"type":            {ev.Type(), e.Type},
		"time":            {ev.Time().UTC().Format(time.RFC3339Nano), e.Time.UTC().Format(time.RFC3339Nano)},
		"datacontenttype": {ev.DataContentType(), e.DataContentType},
		"data":            {string(ev.Data()), data},
	}
	wantExt := map[string]string{
		"heraldversion": strconv.Itoa(e.Version),
		"heraldkind":    string(e.Kind),
		"correlationid": e.CorrelationID,
		"causationid":   e.CausationID,
		"partitionkey":  e.Key,
		"traceparent":   e.TraceParent,
		"tracestate":    e.TraceState,
	}
	for k, v := range wantExt {
		if v == "" {
			delete(wantExt, k)
		}
	}
	gotExt := map[string]string{}
	for k, v := range ev.Extensions() {
		gotExt[k] = fmt.Sprint(v)
	}
	for name, p := range attrs {
		if p[0] != p[1] {
			t.Errorf("%s: %s is %q in the SDK, %q in herald", e.Type, name, p[0], p[1])
		}
	}
	if !maps.Equal(gotExt, wantExt) {
		t.Errorf("%s: extensions in the SDK %q, want %q", e.Type, gotExt, wantExt)
	}
	for _, k := range []string{"heraldversion", "heraldkind", "correlationid", "traceparent", "tracestate"} {
		if _, ok := wantExt[k]; !ok {
			t.Errorf("%s: herald sent no %s", e.Type, k)
		}
	}
	if e.Kind == envelope.KindIntegration && wantExt["partitionkey"] != "o-7" {
		t.Errorf("integration event's partitionkey %q, want o-7", wantExt["partitionkey"])
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
