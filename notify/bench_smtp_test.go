package notify_test

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/internal/benchrun"
)

// BenchmarkNotifySMTP runs the notify scenario of `herald bench` (package
// internal/benchrun) with b.N notifications: plain go-mail sending
// pre-rendered messages — the same templates, headers and parts as
// notify/smtp builds — through smtp.DefaultPoolSize reused sessions into an
// in-process SMTP server (the ceiling), then herald's whole pipeline into
// the same server: Notify in Do (100 per transaction) → outbox → broker →
// Receive (directory, preferences, suppression, idempotency, a throttle of
// 100 per recipient and hour — counted, not hit) → worker (claim, template,
// notify/smtp with the same pool) → delivery log, on SQLite. One recipient
// per event, round-robin over 1000. It reports herald's notifications/s and
// its fraction of go-mail's rate ("x-raw"):
//
//	go test -run='^$' -bench=BenchmarkNotifySMTP -benchtime=20000x ./notify
func BenchmarkNotifySMTP(b *testing.B) {
	b.ResetTimer()
	rs, err := benchrun.Run(context.Background(), benchrun.Config{Notifications: b.N}, []string{"notify"}, nil)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	var raw, herald benchrun.Result
	for _, r := range rs {
		if r.Baseline {
			raw = r
		} else {
			herald = r
		}
	}
	b.ReportMetric(herald.EventsPerSec, "notifications/s")
	b.ReportMetric(raw.EventsPerSec, "raw-msgs/s")
	if raw.EventsPerSec > 0 {
		b.ReportMetric(herald.EventsPerSec/raw.EventsPerSec, "x-raw")
	}
}
