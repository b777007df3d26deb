package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/benchrun"
)

// TestRunWatermill runs both Watermill systems with a few hundred events on
// an embedded nats-server and checks the JSON result they print.
func TestRunWatermill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	br, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithListen("127.0.0.1:0"), natsjs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	for _, sys := range []string{"watermill-default", "watermill-tuned"} {
		var out, errb bytes.Buffer
		if err := run(ctx, []string{"run", "--system", sys, "--nats", br.URL(), "--events", "300", "--quiet"}, &out, &errb); err != nil {
			t.Fatalf("%s: %v\n%s", sys, err, errb.String())
		}
		var r benchrun.Result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v: %q", sys, err, out.String())
		}
		if r.System != sys || r.Scenario != "bus" || r.Events != 300 || r.EventsPerSec <= 0 || r.P50 <= 0 || r.CPUPer100k <= 0 || !r.Baseline {
			t.Errorf("%s: %+v", sys, r)
		}
	}
}

func TestChart(t *testing.T) {
	dir := t.TempDir()
	var rs []benchrun.Result
	for i, sys := range []string{"raw-nats.go", "herald-sqlite", "watermill-default"} {
		rs = append(rs, benchrun.Result{Scenario: "bus", System: sys, Baseline: sys != "herald-sqlite", EventsPerSec: float64(1000 * (i + 1))})
	}
	b, _ := json.Marshal(rs)
	in, out := filepath.Join(dir, "r.json"), filepath.Join(dir, "c.png")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"chart", "--in", in, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if h := img.Bounds().Dy(); h < 100 {
		t.Errorf("chart height %d for %d bars", h, len(rs))
	}
}

func TestRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"run", "--system", "kafka", "--nats", "nats://x"}, {"run", "--system", "watermill-default"}, {"chart"}} {
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		if len(args) > 2 && !strings.Contains(err.Error(), strconv.Quote(args[2])) && !strings.Contains(err.Error(), "--nats") {
			t.Errorf("%v: %v", args, err)
		}
	}
}
