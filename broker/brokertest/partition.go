package brokertest

import (
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

// The cases in this file cover partitioned transports (broker.Partitioner).
// Each skips when the broker lacks the interface or has one partition.

// partitioner returns b's broker.Partitioner, skipping t unless b has more
// than one partition.
func partitioner(t *testing.T, b broker.Broker) broker.Partitioner {
	t.Helper()
	p, ok := b.(broker.Partitioner)
	if !ok {
		t.Skip("transport does not implement broker.Partitioner")
	}
	if p.Partitions() < 2 {
		t.Skip("broker has one partition")
	}
	return p
}

// keyedEvents returns perKey events for each of keys, interleaved, each
// counting i in its data.
func keyedEvents(typ string, keys []string, perKey int) []*envelope.Envelope {
	var es []*envelope.Envelope
	for i := range perKey {
		for _, k := range keys {
			e := newEvent(typ, envelope.KindIntegration, i)
			e.Key = k
			es = append(es, e)
		}
	}
	return es
}

// partitionsKeepKeyOrder publishes events of many keys and consumes every
// partition: each event arrives once, on the partition Partition(key) names,
// and the events of a key in publish order; keyless events are on
// partition 0.
func (s *suite) partitionsKeepKeyOrder(t *testing.T) {
	b := s.newBroker(t)
	pt := partitioner(t, b)
	svc, name, typ := names(t)
	sub := subscription(svc, name, typ, envelope.KindIntegration, 10*time.Second)
	provision(t, b, sub)
	keys := []string{""}
	for i := range 24 {
		keys = append(keys, "key-"+strconv.Itoa(i))
	}
	es := keyedEvents(typ, keys, 8)
	publish(t, b, es...)
	keyOf := map[string]string{}
	for _, e := range es {
		keyOf[e.ID] = e.Key
	}
	n := pt.Partitions()
	cs := make([]*consumer, n)
	for p := range n {
		ps := sub
		ps.Partition = p
		cs[p] = startConsume(t, b, ps, 8, nil)
	}
	waitFor(t, "every event on some partition", func() bool {
		total := 0
		for _, c := range cs {
			total += len(c.snapshot())
		}
		return total >= len(es)
	})
	used := map[int]bool{}
	got := map[string][]string{} // key -> ids in arrival order
	for p, c := range cs {
		if err := c.stop(); err != nil {
			t.Fatalf("Consume partition %d: %v", p, err)
		}
		for _, r := range c.snapshot() {
			k, ok := keyOf[r.id]
			if !ok {
				t.Fatalf("partition %d: unknown event %s", p, r.id)
			}
			if want := pt.Partition(k); want != p {
				t.Fatalf("event of key %q arrived on partition %d, Partition(%q) = %d", k, p, k, want)
			}
			used[p] = true
			got[k] = append(got[k], r.id)
		}
	}
	if pt.Partition("") != 0 {
		t.Fatalf("Partition(\"\") = %d, want 0", pt.Partition(""))
	}
	for _, k := range keys {
		var want []string
		for _, e := range es {
			if e.Key == k {
				want = append(want, e.ID)
			}
		}
		equalIDs(t, got[k], want)
	}
	if len(used) < 2 {
		t.Fatalf("%d keys all landed on one partition of %d", len(keys), n)
	}
}
