package natsserver_test

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/natsserver"
)

// TestKillRestartKeepsAcknowledgedMessages: a message the server
// acknowledged survives a SIGKILL (sync_interval: always) and the restarted
// server is on the same port and store.
func TestKillRestartKeepsAcknowledgedMessages(t *testing.T) {
	dir := t.TempDir()
	s := natsserver.Start(t, dir, 0)
	if s.Port() == 4222 {
		t.Fatal("took the default port")
	}
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := js.Publish(ctx, "t.x", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	pid := s.PID()
	s.Kill()
	if s.PID() != 0 {
		t.Fatal("PID after Kill")
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.Port()), time.Second); err == nil {
		c.Close()
		t.Fatal("something still listens after Kill")
	}
	s.Restart()
	if s.PID() == 0 || s.PID() == pid {
		t.Fatalf("PID %d after restart (was %d)", s.PID(), pid)
	}
	var info *jetstream.StreamInfo
	for {
		st, err := js.Stream(ctx, "T")
		if err == nil {
			if info, err = st.Info(ctx); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info.State.Msgs != 100 {
		t.Fatalf("%d messages after kill and restart, want 100", info.State.Msgs)
	}
	if filepath.Dir(filepath.Join(s.Dir(), "x")) != dir {
		t.Fatalf("store dir %s, want %s", s.Dir(), dir)
	}
}

// TestStartRefusesABusyPort: Start never runs on, nor mistakes for its own,
// a port where another server listens.
func TestStartRefusesABusyPort(t *testing.T) {
	natsserver.Build(t) // skips in -short mode, here and not in the goroutine
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		natsserver.Start(ft, t.TempDir(), port)
	}()
	<-done
	if !ft.failed {
		t.Fatal("Start on a busy port did not fail")
	}
}

// fakeT records a Fatal instead of ending the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = true
	f.TB.Logf("(expected) "+format, args...)
	runtime.Goexit()
}
