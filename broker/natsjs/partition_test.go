package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// PartitionOf is a wire contract: services in other languages compute the
// same. The values were computed independently (FNV-1a 32 in Python).
func TestPartitionOfKnownValues(t *testing.T) {
	cases := []struct {
		key  string
		n    int
		want int
	}{
		{"", 4, 0},
		{"", 256, 0},
		{"customer-1", 1, 0},
		{"customer-1", 2, 1},
		{"customer-1", 4, 3},
		{"customer-1", 16, 7},
		{"customer-1", 256, 23},
		{"customer-2", 4, 2},
		{"customer-2", 256, 170},
		{"customer-3", 4, 1},
		{"customer-4", 4, 0},
		{"order-7", 16, 11},
		{"k", 256, 234},
		{"customer-42/été", 4, 1},     // bytes of the UTF-8 encoding
		{"customer-42/été", 16, 9},    //
		{"customer-42/été", 256, 121}, //
		{"550e8400-e29b-41d4-a716-446655440000", 16, 8},
		{"customer-1", 0, 0}, // n < 1 counts as one partition
	}
	for _, c := range cases {
		if got := PartitionOf(c.key, c.n); got != c.want {
			t.Errorf("PartitionOf(%q, %d) = %d, want %d", c.key, c.n, got, c.want)
		}
	}
}

func TestPartitionNames(t *testing.T) {
	cases := []struct {
		partitions int
		p          int
		stream     string
		subject    string
		replay     string
		durable    string
	}{
		{1, 0, "ACME_HQ_INT", "acme.hq.int.shop.order.placed", "acme.hq.rpl.int.billing_on-order", "billing_on-order"},
		{4, 0, "ACME_HQ_INT_0", "acme.hq.int.0.shop.order.placed", "acme.hq.rpl.int.0.billing_on-order", "billing_on-order_p0"},
		{4, 3, "ACME_HQ_INT_3", "acme.hq.int.3.shop.order.placed", "acme.hq.rpl.int.3.billing_on-order", "billing_on-order_p3"},
		{256, 255, "ACME_HQ_INT_255", "acme.hq.int.255.shop.order.placed", "acme.hq.rpl.int.255.billing_on-order", "billing_on-order_p255"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d/%d", c.partitions, c.p), func(t *testing.T) {
			n := newNames("acme.hq", c.partitions)
			k := envelope.KindIntegration
			if got, _ := n.stream(k, c.p); got != c.stream {
				t.Errorf("stream = %q, want %q", got, c.stream)
			}
			if got, _ := n.eventSubject(k, "shop.order.placed", c.p); got != c.subject {
				t.Errorf("event subject = %q, want %q", got, c.subject)
			}
			if got, _ := n.replaySubject(k, ConsumerName("billing", "on-order"), c.p); got != c.replay {
				t.Errorf("replay subject = %q, want %q", got, c.replay)
			}
			if got := n.durable(k, "billing", "on-order", c.p); got != c.durable {
				t.Errorf("durable = %q, want %q", got, c.durable)
			}
			// Notifications stay on one stream with today's names.
			ntf := envelope.KindNotification
			if got, _ := n.stream(ntf, c.p); got != "ACME_HQ_NTF" {
				t.Errorf("notification stream = %q", got)
			}
			if got, _ := n.eventSubject(ntf, "shop.order.placed", c.p); got != "acme.hq.ntf.shop.order.placed" {
				t.Errorf("notification subject = %q", got)
			}
			if got := n.durable(ntf, "billing", "on-order", c.p); got != "billing_on-order" {
				t.Errorf("notification durable = %q", got)
			}
		})
	}
}

func keyed(typ, key string, i int) *envelope.Envelope {
	e := bulk(typ, 1)[0]
	e.Key = key
	e.Data = []byte(`{"key":"` + key + `","n":` + strconv.Itoa(i) + `}`)
	return e
}

// seqOf reads the per-key counter back from an event's data.
func seqOf(t testing.TB, data []byte) (key string, n int) {
	t.Helper()
	s := string(data)
	i, j := strings.Index(s, `"key":"`), strings.Index(s, `","n":`)
	if i < 0 || j < 0 {
		t.Fatalf("event data %q", s)
	}
	n, err := strconv.Atoi(strings.TrimSuffix(s[j+len(`","n":`):], "}"))
	if err != nil {
		t.Fatalf("event data %q: %v", s, err)
	}
	return s[i+len(`"key":"`) : j], n
}

func TestPartitionsRouteByKey(t *testing.T) {
	const n = 4
	b := embedded(t, WithEphemeral(), WithPartitions(n))
	ctx := testCtx(t, 60*time.Second)
	const typ = "shop.order.placed"
	sub := broker.Subscription{Service: "billing", Name: "on-order", Types: []string{typ}, Kind: envelope.KindIntegration, MaxAckPending: 1000}
	if err := b.Provision(ctx, broker.Topology{Service: "billing", Subscriptions: []broker.Subscription{sub}}); err != nil {
		t.Fatal(err)
	}
	for p := range n {
		s, err := b.js.Stream(ctx, fmt.Sprintf("HERALD_INT_%d", p))
		if err != nil {
			t.Fatalf("stream of partition %d: %v", p, err)
		}
		md := s.CachedInfo().Config.Metadata
		if md[metaPartitions] != "4" || md[metaPartition] != strconv.Itoa(p) {
			t.Errorf("partition %d: metadata %v", p, md)
		}
	}
	if _, err := b.js.Stream(ctx, "HERALD_INT"); err == nil {
		t.Error("stream HERALD_INT exists with 4 partitions")
	}
	keys := []string{"customer-1", "customer-2", "customer-3", "customer-4", "order-7", "k", ""}
	var es []*envelope.Envelope
	want := map[string]int{}
	for i := range 20 {
		for _, k := range keys {
			es = append(es, keyed(typ, k, i))
			want[k]++
		}
	}
	mustPublish(t, b, es)
	if b.Partition("") != 0 || b.Partitions() != n {
		t.Fatalf("Partition(\"\") = %d, Partitions() = %d", b.Partition(""), b.Partitions())
	}

	var mu sync.Mutex
	got := map[int][]string{} // partition -> "key/n" in delivery order
	total := 0
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for p := range n {
		ps := sub
		ps.Partition = p
		wg.Go(func() {
			err := b.Consume(cctx, ps, 16, func(ctx context.Context, ds []broker.Delivery) {
				for _, d := range ds {
					k, i := seqOf(t, d.Data())
					mu.Lock()
					got[p] = append(got[p], k+"/"+strconv.Itoa(i))
					total++
					mu.Unlock()
					if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
						t.Errorf("Ack: %v", err)
					}
				}
			})
			if err != nil {
				t.Errorf("Consume partition %d: %v", p, err)
			}
		})
	}
	waitUntil(t, 30*time.Second, "every event", func() bool { mu.Lock(); defer mu.Unlock(); return total >= len(es) })
	cancel()
	wg.Wait()

	for p, evs := range got {
		next := map[string]int{}
		for _, ev := range evs {
			k, is, _ := strings.Cut(ev, "/")
			i, _ := strconv.Atoi(is)
			if want := PartitionOf(k, n); want != p {
				t.Fatalf("key %q arrived on partition %d, want %d", k, p, want)
			}
			if i != next[k] {
				t.Fatalf("partition %d: key %q event %d after %d: out of order", p, k, i, next[k]-1)
			}
			next[k]++
		}
	}
	if len(got[0]) == 0 || len(got[PartitionOf("customer-1", n)]) == 0 {
		t.Fatalf("partitions got %v events", len(got))
	}
	// Replay of a keyed event goes to its partition's consumer only.
	e := keyed(typ, "customer-1", 99)
	if err := b.Replay(ctx, "billing", "on-order", e); err != nil {
		t.Fatal(err)
	}
	s, _ := b.js.Stream(ctx, "HERALD_INT_3")
	m, err := s.GetLastMsgForSubject(ctx, "herald.rpl.int.3.billing_on-order")
	if err != nil || m.Header.Get(envelope.HeaderID) != e.ID {
		t.Fatalf("replay on partition 3: %v %v", m, err)
	}
	// A partition out of range is named.
	bad := sub
	bad.Partition = n
	err = b.Consume(ctx, bad, 1, func(context.Context, []broker.Delivery) {})
	if err == nil || !strings.Contains(err.Error(), "partition 4: want 0 to 3 (WithPartitions(4))") {
		t.Fatalf("Consume of partition 4: %v", err)
	}
	if _, err := b.PendingState(ctx, bad); err == nil || !strings.Contains(err.Error(), "partition 4") {
		t.Fatalf("PendingState of partition 4: %v", err)
	}
	ntf := broker.Subscription{Service: "billing", Name: "n", Types: []string{typ}, Kind: envelope.KindNotification, Partition: 1}
	if _, err := b.Pending(ctx, ntf); err == nil || !strings.Contains(err.Error(), "one partition") {
		t.Fatalf("Pending of notification partition 1: %v", err)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPartitionMismatchRefused(t *testing.T) {
	srv := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"))
	ctx := testCtx(t, 60*time.Second)
	top := broker.Topology{Service: "billing", Publishes: []broker.TypeRef{{Type: "a.b", Kind: envelope.KindIntegration}}}
	cases := []struct {
		first, then int
	}{{1, 4}, {4, 1}, {4, 2}}
	for i, c := range cases {
		prefix := "mm" + strconv.Itoa(i)
		b1 := connect(t, srv.URL(), WithPrefix(prefix), WithPartitions(c.first))
		if err := b1.Provision(ctx, top); err != nil {
			t.Fatalf("Provision with %d: %v", c.first, err)
		}
		b2 := connect(t, srv.URL(), WithPrefix(prefix), WithPartitions(c.then))
		err := b2.Provision(ctx, top)
		if !errors.Is(err, ErrPartitionMismatch) {
			t.Fatalf("Provision with %d after %d: %v, want ErrPartitionMismatch", c.then, c.first, err)
		}
		for _, s := range []string{
			fmt.Sprintf("have %d partition(s)", c.first),
			fmt.Sprintf("WithPartitions(%d);", c.then),
			fmt.Sprintf("natsjs.WithPartitions(%d) / --partitions %d / HERALD_PARTITIONS=%d", c.first, c.first, c.first),
			fmt.Sprintf("migrate offline to %d", c.then),
		} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not say %q", err, s)
			}
		}
		// The same count again is fine.
		if err := connect(t, srv.URL(), WithPrefix(prefix), WithPartitions(c.first)).Provision(ctx, top); err != nil {
			t.Fatalf("Provision with %d again: %v", c.first, err)
		}
	}
}
