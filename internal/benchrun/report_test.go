package benchrun

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFillLatency(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 1000; i++ { // 1 ms … 1000 ms, shuffled order
		ds = append(ds, time.Duration((i*7919)%1000+1)*time.Millisecond)
	}
	var r Result
	fillLatency(&r, ds, []time.Duration{10 * time.Millisecond, 100 * time.Millisecond})
	if r.P50 != 501 || r.P90 != 901 || r.P99 != 991 || r.Max != 1000 {
		t.Errorf("p50 %v p90 %v p99 %v max %v", r.P50, r.P90, r.P99, r.Max)
	}
	// < 10 ms: 1…9; 10–100 ms: 10…99; ≥ 100 ms: the rest.
	want := []int{9, 90, 901}
	for i, b := range r.Histogram {
		if b.Count != want[i] {
			t.Errorf("bucket %d (%s): %d, want %d", i, bucketLabel(r.Histogram, i), b.Count, want[i])
		}
	}
	var empty Result
	fillLatency(&empty, nil, nil)
	if empty.P50 != 0 || empty.Histogram != nil {
		t.Errorf("no latencies: %+v", empty)
	}
}

func TestGoals(t *testing.T) {
	rs := []Result{
		{Scenario: "bus", System: "raw-nats.go", EventsPerSec: 1000},
		{Scenario: "bus", System: "herald-sqlite", EventsPerSec: 900},
		{Scenario: "bus", System: "watermill-default", EventsPerSec: 300},
		{Scenario: "latency", System: "herald-sqlite@10.0k/s", Events: 990, Offered: 1000, P50: 0.5, P99: 4},
		{Scenario: "durable", System: "durability-on", EventsPerSec: 49000},
	}
	got := map[string]Goal{}
	for _, g := range Goals(rs) {
		got[g.Name] = g
	}
	for name, want := range map[string]struct{ known, met bool }{
		"bus: herald (SQLite) vs raw nats.go":                     {true, true},
		"bus: herald (SQLite) vs Watermill default":               {true, false},
		"bus: herald (SQLite) vs Watermill tuned":                 {false, false},
		"latency: p50 and p99 at a fixed rate, embedded defaults": {true, true},
		"durable: durability mechanism on":                        {true, false},
		"notify: herald vs raw go-mail":                           {false, false},
	} {
		g, ok := got[name]
		if !ok || g.Known != want.known || g.Met != want.met {
			t.Errorf("%s: %+v, want known %v met %v", name, g, want.known, want.met)
		}
	}
	if m := got["bus: herald (SQLite) vs raw nats.go"].Measured; !strings.HasPrefix(m, "0.90×") {
		t.Errorf("measured %q", m)
	}
	rs[3].Events = 500 // the producer fell behind: not the rate the goal asks for
	for _, g := range Goals(rs) {
		if strings.HasPrefix(g.Name, "latency") && g.Met {
			t.Errorf("latency met with half the offered events: %+v", g)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	dir := t.TempDir()
	gen := func(s string) string { return MarkBegin + "\n" + s + "\n" + MarkEnd + "\n" }
	fresh := filepath.Join(dir, "fresh.md")
	if err := WriteMarkdown(fresh, gen("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteMarkdown(fresh, gen("two")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(fresh); string(b) != "# Benchmarks\n\n"+gen("two") {
		t.Errorf("fresh file:\n%s", b)
	}
	plain := filepath.Join(dir, "plain.md")
	if err := os.WriteFile(plain, []byte("notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteMarkdown(plain, gen("x")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(plain); string(b) != "notes\n\n"+gen("x") {
		t.Errorf("file without markers:\n%s", b)
	}
	if err := WriteMarkdown(filepath.Join(dir, "no", "such", "dir.md"), gen("x")); err == nil {
		t.Error("no error for a missing directory")
	}
}
