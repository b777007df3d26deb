package natsserver_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/natsserver"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestRegionsSourceThroughCutLink: two single-node regions, each its own
// JetStream domain, joined by a leafnode through a Proxy. A stream in
// region b sources the same-named stream of region a; the subjects of
// both streams are denied on the leafnode, so that a publish in a lands in
// b only through the source. Messages published while the proxy is cut
// arrive once it is restored, each once and in order.
func TestRegionsSourceThroughCutLink(t *testing.T) {
	dir := t.TempDir()
	a := natsserver.StartClusterConfig(t, filepath.Join(dir, "a"), natsserver.ClusterConfig{Nodes: 1, Domain: "a", LeafListen: true})
	link := natsserver.StartProxy(t, a.LeafAddrs()...)
	b := natsserver.StartClusterConfig(t, filepath.Join(dir, "b"), natsserver.ClusterConfig{Nodes: 1, Domain: "b",
		LeafRemotes: link.URLs("nats-leaf"), LeafDeny: []string{"t.>"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []*natsserver.Cluster{a, b} {
		if err := c.WaitJetStream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WaitDomain(ctx, "a"); err != nil {
		t.Fatalf("region a through b: %v", err)
	}
	ajs, _ := a.JetStream()
	bjs, _ := b.JetStream()
	if _, err := ajs.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bjs.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"},
		Sources: []*jetstream.StreamSource{{Name: "T", External: &jetstream.ExternalStream{APIPrefix: "$JS.a.API"}}}}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := ajs.Publish(ctx, "t.x", []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs := func() uint64 {
		st, err := bjs.Stream(ctx, "T")
		if err != nil {
			return 0
		}
		return st.CachedInfo().State.Msgs
	}
	publish(0, 100)
	testwait.Until(t, 30*time.Second, "100 messages sourced", func() bool { return msgs() == 100 })
	link.Cut()
	publish(100, 200)
	time.Sleep(500 * time.Millisecond)
	if n := msgs(); n != 100 {
		t.Fatalf("%d messages in b while cut, want 100", n)
	}
	restored := time.Now()
	link.Restore()
	testwait.Until(t, 45*time.Second, "200 messages sourced", func() bool { return msgs() >= 200 })
	t.Logf("backlog of 100 sourced %v after the link came back", time.Since(restored).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	if n := msgs(); n != 200 {
		t.Fatalf("%d messages in b, want 200", n)
	}
	st, _ := bjs.Stream(ctx, "T")
	for seq := uint64(1); seq <= 200; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != fmt.Sprint(seq-1) {
			t.Fatalf("message %d is %q", seq, m.Data)
		}
	}
}
