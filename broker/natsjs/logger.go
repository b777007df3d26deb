package natsjs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// serverLogger routes the nats-server's log lines to a *slog.Logger. It
// implements server.Logger.
type serverLogger struct {
	l   *slog.Logger
	min slog.Level // lines below it are dropped (WithServerLogLevel)
	// fatal, if set, receives the first fatal error (such as a client port
	// already in use), which the server only logs.
	fatal chan<- string
}

func (s serverLogger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if level < s.min || !s.l.Enabled(ctx, level) {
		return
	}
	s.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (s serverLogger) Noticef(format string, v ...any) { s.log(slog.LevelInfo, format, v) }
func (s serverLogger) Warnf(format string, v ...any)   { s.log(slog.LevelWarn, format, v) }
func (s serverLogger) Errorf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s serverLogger) Debugf(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }
func (s serverLogger) Tracef(format string, v ...any)  { s.log(slog.LevelDebug-4, format, v) }

func (s serverLogger) Fatalf(format string, v ...any) {
	s.log(slog.LevelError+4, format, v)
	if s.fatal != nil {
		select {
		case s.fatal <- strings.TrimSpace(fmt.Sprintf(format, v...)):
		default:
		}
	}
}
