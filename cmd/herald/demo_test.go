package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/examples/shop/analytics"
)

// TestDemo runs herald demo --duration 10s and expects every order complete:
// shipped, both e-mails and the push delivered once, every buyer verified;
// with node on PATH, the Node.js analytics service counted every order,
// reviews marked trending products, and the service stopped.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"demo", "--duration", "10s", "--rate", "50", "--data-dir", t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "every order was confirmed, scheduled, dispatched and shipped; every customer got each e-mail once") {
		t.Fatalf("demo output:\n%s", out.String())
	}
	// The Node.js service: started, counted, stopped (or said why not).
	if analytics.Available() == nil {
		re := regexp.MustCompile(`analytics \(Node.js\) +counted (\d+) of (\d+) confirmed orders \(0 duplicates ignored\); \d+ trending event\(s\) published, reviews marked [1-9]`)
		m := re.FindStringSubmatch(out.String())
		if m == nil || m[1] != m[2] || !strings.Contains(out.String(), "analytics (Node.js)      stopped") {
			t.Fatalf("demo output lacks the Node.js service's report:\n%s", out.String())
		}
	} else if !strings.Contains(out.String(), "analytics     not started: ") {
		t.Fatalf("demo output does not say why the Node.js service did not start:\n%s", out.String())
	}
	// The first order's causal trace, from the order to its deliveries.
	got := out.String()
	i := strings.Index(got, "the causal trace of the first order")
	if i < 0 || !strings.Contains(got[i:], "orders.order-placed domain") || !strings.Contains(got[i:], "deliver") || strings.Contains(got[i:], "gap:") {
		t.Fatalf("demo output lacks a complete trace:\n%s", got)
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"demo", "--rate", "0"}, {"demo", "--duration", "-1s"}} {
		cmd := newRoot()
		cmd.SetArgs(args)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[1], "--")) {
			t.Fatalf("%v: err = %v, want one naming the flag", args, err)
		}
	}
}
