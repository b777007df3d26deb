package natsjs

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// traceBatches reads every batch the trace stream holds.
func traceBatches(t *testing.T, b *Broker) ([]string, error) {
	t.Helper()
	var got []string
	err := b.ReadTrace(testCtx(t, 30*time.Second), func(batch []byte) error {
		got = append(got, string(batch))
		return nil
	})
	return got, err
}

// TestTraceStreamOnFileSurvivesARestart: with WithTraceStorage(TraceOnFile)
// the trace stream and its records are back after the server restarts on
// the same directory; in memory (the default) the stream is gone, and
// reading says there is no trace stream.
func TestTraceStreamOnFileSurvivesARestart(t *testing.T) {
	for _, c := range []struct {
		storage TraceStorage
		kept    bool
	}{{TraceOnFile, true}, {TraceInMemory, false}} {
		t.Run(c.storage.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "nats")
			ctx := testCtx(t, 30*time.Second)
			b := embedded(t, WithDataDir(dir), WithTraceStorage(c.storage))
			if err := b.ProvisionTrace(ctx, 0, 0); err != nil {
				t.Fatal(err)
			}
			if err := b.AppendTrace(ctx, "orders", []byte("batch-1")); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = embedded(t, WithDataDir(dir))
			got, err := traceBatches(t, b)
			switch {
			case c.kept && (err != nil || len(got) != 1 || got[0] != "batch-1"):
				t.Errorf("after a restart: %q, %v; want batch-1", got, err)
			case !c.kept && !errors.Is(err, broker.ErrNotProvisioned):
				t.Errorf("after a restart: %q, %v; want ErrNotProvisioned (a stream in memory is lost)", got, err)
			}
		})
	}
}

// TestProvisionTraceKeepsTheStreamsStorage: a stream's storage cannot
// change, so a process whose option differs from the existing stream's
// (a service in memory, connected to herald dev's stream on file) keeps
// the stream as it is, instead of failing.
func TestProvisionTraceKeepsTheStreamsStorage(t *testing.T) {
	srv := embedded(t, WithEphemeral(), WithListen("127.0.0.1:0"), WithTraceStorage(TraceOnFile))
	ctx := testCtx(t, 30*time.Second)
	if err := srv.ProvisionTrace(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	client := connect(t, srv.URL())
	if err := client.ProvisionTrace(ctx, time.Hour, 1<<20); err != nil {
		t.Fatalf("ProvisionTrace in memory over a stream on file: %v", err)
	}
	st, err := srv.js.Stream(ctx, srv.names.traceStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage || cfg.MaxAge != time.Hour || cfg.MaxBytes != 1<<20 {
		t.Errorf("trace stream: storage %v, max age %v, max bytes %d; want file, the client's 1h and 1 MiB", cfg.Storage, cfg.MaxAge, cfg.MaxBytes)
	}
	if _, err := Embedded(ctx, WithEphemeral(), WithTraceStorage(TraceStorage(7))); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("WithTraceStorage(7): %v, want ErrInvalidOption", err)
	}
}
