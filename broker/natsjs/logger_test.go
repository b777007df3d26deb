package natsjs

import (
	"context"
	"errors"
	"github.com/heraldhq/herald/internal/testlog"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// serverLines starts and closes an embedded server with opts on a logger
// that takes every level, and returns the server's log lines.
func serverLines(t *testing.T, opts ...Option) []string {
	t.Helper()
	var buf testlog.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	b, err := Embedded(testCtx(t, 30*time.Second), append([]Option{WithEphemeral(), WithLogger(log)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.Lines(buf.String()) {
		if strings.Contains(l, "component=nats-server") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestEmbeddedServerLogsWarningsByDefault: the embedded server's start-up
// banner and notices (two dozen lines at Info before anything of the
// application's) stay out of the log unless asked for with
// WithServerLogLevel, even on a logger that takes everything.
func TestEmbeddedServerLogsWarningsByDefault(t *testing.T) {
	if lines := serverLines(t); len(lines) != 0 {
		t.Errorf("default: %d server lines, want none (a clean start and stop warns of nothing):\n%s", len(lines), strings.Join(lines, ""))
	}
	info := serverLines(t, WithServerLogLevel(slog.LevelInfo))
	if len(info) < 10 || !strings.Contains(strings.Join(info, ""), "Server is ready") {
		t.Errorf("WithServerLogLevel(Info): %d server lines, want its notices:\n%s", len(info), strings.Join(info, ""))
	}
	for _, l := range info {
		if strings.Contains(l, "level=DEBUG") {
			t.Errorf("WithServerLogLevel(Info) logged a debug line: %s", l)
		}
	}
	if _, err := Connect(context.Background(), []string{"nats://127.0.0.1:1"}, WithServerLogLevel(slog.LevelInfo)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Connect with WithServerLogLevel: err %v, want ErrInvalidOption", err)
	}
}
