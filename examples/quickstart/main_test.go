package main

import (
	"context"
	"testing"
	"time"
)

// TestQuickstart runs the README's quickstart end to end.
func TestQuickstart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, t.TempDir(), 25); err != nil {
		t.Fatal(err)
	}
}
