package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/benchrun"
	"github.com/heraldhq/herald/internal/testdb"
)

// TestBenchAll runs every scenario of herald bench with a few hundred
// events (on PostgreSQL too when HERALD_TEST_POSTGRES_URL is set) and checks
// that each system ran every event and the table, goals, JSON and markdown
// carry them. The Watermill peers (another module, built with the go
// command) are left out here; bench/ has its own test.
func TestBenchAll(t *testing.T) {
	dir := t.TempDir()
	md, js := filepath.Join(dir, "b.md"), filepath.Join(dir, "b.json")
	// An existing file keeps the text around the generated part.
	if err := os.WriteFile(md, []byte("# Mine\n\nbefore\n\n"+benchrun.MarkBegin+"\nold\n"+benchrun.MarkEnd+"\n\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"bench", "all", "--events", "200", "--notifications", "100", "--transactions", "50", "--rate", "500", "--duration", "400ms",
		"--peers=false", "--quiet", "--markdown", md, "--json", js}
	pg := os.Getenv(testdb.EnvPostgres)
	if pg != "" {
		args = append(args, "--postgres", pg)
	}
	var out, errb bytes.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errb.String())
	}
	text := out.String()
	for _, col := range []string{"scenario", "system", "events/s", "p50 ms", "p90 ms", "p99 ms", "CPU s/100k", "peak RSS MB", "goal", "verdict", "latency histogram"} {
		if !strings.Contains(text, col) {
			t.Errorf("output lacks %q:\n%s", col, text)
		}
	}
	want := map[string]int{ // system → events
		"bus/raw-nats.go": 200, "bus/herald-sqlite": 200,
		"outbox/bare-tx-sqlite": 50, "outbox/herald-tx-sqlite": 50,
		"latency/herald-sqlite@500/s": 200,
		"notify/raw-go-mail":          100, "notify/herald-notify-sqlite": 100,
		"durable/durability-off": 200, "durable/durability-on": 200, "durable/sync-always": 40, "durable/raw-nats.go-sync-always": 40,
	}
	if pg != "" {
		want["bus/herald-postgres"] = 200
		want["outbox/bare-tx-postgres"] = 50
		want["outbox/herald-tx-postgres"] = 50
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var results []benchrun.Result
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatalf("--json: %v", err)
	}
	got := map[string]benchrun.Result{}
	for _, r := range results {
		got[r.Scenario+"/"+r.System] = r
	}
	for name, n := range want {
		r, ok := got[name]
		if strings.HasPrefix(name, "latency/") && r.Offered == n && r.Events > 0 {
			n = r.Events // a producer that fell a second behind sends fewer than the schedule offered
		}
		switch {
		case !ok:
			t.Errorf("no result for %s; have %v", name, keys(got))
		case r.Events != n || r.EventsPerSec <= 0 || r.CPUPer100k <= 0 || r.PeakRSS <= 0:
			t.Errorf("%s: %+v, want %d events with a rate, CPU and RSS", name, r, n)
		case r.P50 <= 0 || r.P99 < r.P50:
			t.Errorf("%s: latency p50 %v p99 %v", name, r.P50, r.P99)
		}
		if !strings.Contains(text, strings.SplitN(name, "/", 2)[1]) {
			t.Errorf("table lacks %s", name)
		}
	}
	if len(got) != len(want) {
		t.Errorf("results %v, want %v", keys(got), want)
	}
	if h := got["latency/herald-sqlite@500/s"].Histogram; len(h) == 0 {
		t.Error("latency has no histogram")
	} else {
		sum := 0
		for _, x := range h {
			sum += x.Count
		}
		if r := got["latency/herald-sqlite@500/s"]; sum != r.Events || r.Offered != 200 {
			t.Errorf("histogram counts %d events, result %d of %d offered", sum, r.Events, r.Offered)
		}
	}
	doc, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"# Mine\n\nbefore\n\n" + benchrun.MarkBegin, benchrun.MarkEnd + "\n\nafter\n", "| herald-sqlite | 200 |", "herald bench all --", "--events 200 ", "### Goals"} {
		if !strings.Contains(string(doc), s) {
			t.Errorf("markdown lacks %q:\n%s", s, doc)
		}
	}
	if strings.Contains(string(doc), "\nold\n") {
		t.Errorf("markdown kept the old generated part:\n%s", doc)
	}
}

func keys(m map[string]benchrun.Result) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestBenchRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "nope"}, `"nope"`},
		{[]string{"bench", "bus", "--events", "0"}, "--events"},
		{[]string{"bench", "notify", "--notifications", "0"}, "--notifications"},
		{[]string{"bench", "latency", "--rate", "0"}, "--rate"},
		{[]string{"bench", "latency", "--duration", "-1s"}, "--duration"},
		{[]string{"bench", "outbox", "--transactions", "-3"}, "--transactions"},
	} {
		cmd := newRoot()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(tc.args)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}
