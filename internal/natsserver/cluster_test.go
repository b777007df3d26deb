package natsserver_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/natsserver"
)

// TestClusterLeaderKillAndRestart: a 3-node cluster replicates an R3
// stream; SIGKILLing its leader moves the leadership to another node
// (found from the stream's info) with every acknowledged message kept,
// and the killed node comes back on its ports and store.
func TestClusterLeaderKillAndRestart(t *testing.T) {
	c := natsserver.StartCluster(t, t.TempDir(), 3)
	if len(c.URLs()) != 3 {
		t.Fatalf("URLs %v", c.URLs())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.WaitJetStream(ctx); err != nil {
		t.Fatalf("no meta leader: %v", err)
	}
	js, err := c.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	cfg := jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage, Replicas: 3}
	for {
		_, err := js.CreateStream(ctx, cfg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create R3 stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // peers may still be joining
	}
	for i := range 50 {
		if _, err := js.Publish(ctx, "t.x", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.WaitStreamLeader(ctx, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := leader.PID()
	killed := time.Now()
	leader.Kill()
	next, err := c.WaitStreamLeader(ctx, "T", leader)
	if err != nil {
		t.Fatalf("no new leader after killing %s: %v", leader.Name(), err)
	}
	t.Logf("killed leader %s; %s leads after %v", leader.Name(), next.Name(), time.Since(killed).Round(time.Millisecond))
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 50 {
		t.Fatalf("%d messages after the leader's kill, want 50", n)
	}
	leader.Restart()
	if leader.PID() == 0 || leader.PID() == pid {
		t.Fatalf("PID %d after restart (was %d)", leader.PID(), pid)
	}
	// The restarted node catches up and is a current replica again.
	err = func() error {
		for {
			st, err := js.Stream(ctx, "T")
			if err == nil {
				for _, r := range st.CachedInfo().Cluster.Replicas {
					if r.Name == leader.Name() && r.Current && !r.Offline {
						return nil
					}
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err != nil {
		t.Fatalf("restarted node %s not a current replica: %v", leader.Name(), err)
	}
}
