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
	"github.com/heraldhq/herald/internal/natsserver"
)

// TestBenchScale runs herald bench scale with tiny settings — 1 and 2
// partitions × 1 and 2 instances, 300 events a cell — on the embedded server
// and, unless -short, on a 3-node cluster of real nats-server processes,
// and checks that every cell handled every event and that the table and
// the JSON carry every cell with its CPU per event and its ratio.
func TestBenchScale(t *testing.T) {
	servers := "embedded"
	if !testing.Short() {
		natsserver.Build(t) // the cluster's binary, built (or found) before the clock of the run
		servers = "embedded,cluster"
	}
	js, chart := filepath.Join(t.TempDir(), "scale.json"), filepath.Join(t.TempDir(), "chart.md")
	var out, errb bytes.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs([]string{"bench", "scale", "--servers", servers, "--partitions", "1,2", "--instances", "1,2",
		"--events", "300", "--duration", "1m", "--settle", "0", "--postgres", "", "--quiet", "--json", js, "--mermaid", chart})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("bench scale: %v\n%s\n%s", err, out.String(), errb.String())
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var cells []benchrun.ScaleResult
	if err := json.Unmarshal(b, &cells); err != nil {
		t.Fatal(err)
	}
	want := 4 * (strings.Count(servers, ",") + 1)
	if len(cells) != want {
		t.Fatalf("%d cells, want %d:\n%s", len(cells), want, b)
	}
	seen := map[string]bool{}
	for _, c := range cells {
		seen[c.Label()] = true
		if c.Events != 300 || c.Offered != 300 || c.EventsPerSec <= 0 || c.CPUPerEvent <= 0 || c.Ratio <= 0 {
			t.Errorf("%s: %+v", c.Label(), c)
		}
		sum := 0
		for _, n := range c.PerInstance {
			sum += n
		}
		if len(c.PerInstance) != c.Instances || sum != c.Events {
			t.Errorf("%s: handled per instance %v, want %d instances summing to %d", c.Label(), c.PerInstance, c.Instances, c.Events)
		}
		if c.Partitions == 1 && c.Instances == 1 && c.Ratio != 1 {
			t.Errorf("%s: ratio %v, want 1", c.Label(), c.Ratio)
		}
		if c.Server == benchrun.ServerCluster && (c.Nodes != 3 || c.Replicas != 3) {
			t.Errorf("%s: %d nodes, R%d", c.Label(), c.Nodes, c.Replicas)
		}
	}
	text := out.String()
	mm, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(mm), "xychart-beta"); n != strings.Count(servers, ",")+1 || !strings.Contains(string(mm), `x-axis "partitions" [1, 2]`) ||
		strings.Count(string(mm), "    line [") != 2*n {
		t.Errorf("--mermaid:\n%s", mm)
	}
	for _, s := range strings.Split(servers, ",") {
		for _, p := range []string{"1", "2"} {
			for _, i := range []string{"1", "2"} {
				if l := s + " p" + p + "×i" + i; !seen[l] {
					t.Errorf("no cell %s", l)
				}
			}
		}
		if !strings.Contains(text, s+" (") {
			t.Errorf("no table for %s:\n%s", s, text)
		}
	}
	for _, col := range []string{"| partitions | 1 instance | 2 instances |", "µs, 1.00×", "events per cell on SQLite"} {
		if !strings.Contains(text, col) {
			t.Errorf("output lacks %q:\n%s", col, text)
		}
	}
}

func TestBenchScaleRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--partitions", "0"}, "--partitions 0"},
		{[]string{"--partitions", "1,300"}, "--partitions 300"},
		{[]string{"--partitions", "x"}, `invalid argument "x" for "--partitions"`},
		{[]string{"--instances", "0"}, "--instances 0"},
		{[]string{"--servers", "cloud"}, "--servers cloud: want embedded or cluster"},
		{[]string{"--nodes", "0"}, "--nodes 0"},
		{[]string{"--replicas", "4"}, "--replicas 4: want 1 to --nodes (3)"},
		{[]string{"--events", "0"}, "--events 0"},
		{[]string{"--duration", "0s"}, "--duration 0s"},
		{[]string{"--settle", "-1s"}, "--settle -1s"},
		{[]string{"--cluster-sync", "sometimes"}, "--cluster-sync sometimes"},
		{[]string{"extra"}, `unknown command "extra"`},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"bench", "scale"}, tc.args...)
		if code := execute(context.Background(), args, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("herald %v: exit %d, stderr %q; want exit %d naming %q", args, code, errb.String(), exitUsage, tc.want)
		}
	}
}
