package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs herald demo --duration 10s and expects every order complete:
// shipped, both e-mails and the push delivered once, every buyer verified.
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
