package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/examples/shop/analytics"
	"github.com/heraldhq/herald/examples/shop/shop"
)

// demoThreshold is the analytics service's trending threshold for a demo
// that plans to place orders orders: an order holds 2 of the 10 products on
// average, so a product is in about orders/5 of them and crosses
// orders/10 about halfway through.
func demoThreshold(orders int) int { return max(5, orders/10) }

// demoNode is the shop's Node.js analytics service as the demo runs it.
type demoNode struct {
	p     *analytics.Process
	state string
}

// startAnalytics starts the Node.js analytics service on the demo's broker
// when node and npm are on PATH, and says on out what it did: started (with
// its PID), or why not. It never fails the demo: the service is an extra.
func startAnalytics(ctx context.Context, out io.Writer, natsURL, dataDir string, orders int, verbose bool) *demoNode {
	if err := analytics.Available(); err != nil {
		fmt.Fprintf(out, "  %-13s not started: %v\n", "analytics", err)
		return nil
	}
	var log io.Writer = io.Discard
	if verbose {
		log = os.Stderr
	}
	dir, err := prepareAnalytics(ctx)
	if err != nil {
		fmt.Fprintf(out, "  %-13s not started: %v\n", "analytics", err)
		return nil
	}
	state := filepath.Join(dataDir, "analytics-state.json")
	threshold := demoThreshold(orders)
	p, err := analytics.Start(ctx, analytics.Config{Dir: dir, NATS: natsURL, State: state, Threshold: threshold, Log: log})
	if err != nil {
		fmt.Fprintf(out, "  %-13s not started: %v\n", "analytics", err)
		return nil
	}
	fmt.Fprintf(out, "  %-13s Node.js, pid %d (examples/shop/analytics; a product trends at %d orders)\n", "analytics", p.PID(), threshold)
	return &demoNode{p: p, state: state}
}

// prepareAnalytics installs the service's npm packages beside its sources
// in a checkout that holds the sources this binary embeds, or else (an
// installed herald, a read-only module cache, a checkout edited since the
// build) in the user's cache directory: the demo never writes over a
// checkout's sources.
func prepareAnalytics(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var errs []error
	if dir := analytics.SourceDir(); dir != "" && analytics.Holds(dir) {
		err := analytics.Prepare(ctx, dir)
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
	}
	cache, err := os.UserCacheDir()
	if err == nil {
		dir := filepath.Join(cache, "herald", "shop-analytics")
		if err = analytics.Prepare(ctx, dir); err == nil {
			return dir, nil
		}
	}
	return "", errors.Join(append(errs, err)...)
}

// report waits briefly for the service to have counted every order placed,
// prints what it did, and stops it (SIGTERM, then SIGKILL, by PID).
func (n *demoNode) report(ctx context.Context, out io.Writer, sys *shop.System, placed int) {
	if n == nil {
		return
	}
	var st analytics.State
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ = analytics.ReadState(n.state)
		if len(st.Seen) >= placed || time.Now().After(deadline) || n.p.Exited() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	trending, _ := sys.Reviews.Trending(ctx)
	var products []string
	for _, t := range trending {
		products = append(products, t.ProductID)
	}
	slices.Sort(products)
	if len(products) == 0 {
		products = []string{"none"}
	}
	fmt.Fprintf(out, "  analytics (Node.js)      counted %d of %d confirmed orders (%d duplicates ignored); %d trending event(s) published, reviews marked %d trending: %s\n",
		len(st.Seen), placed, st.Duplicates, len(st.Published), len(trending), strings.Join(products, ", "))
	if err := n.p.Stop(5 * time.Second); err != nil {
		fmt.Fprintf(out, "  analytics (Node.js)      stop: %v\n", err)
		return
	}
	fmt.Fprintln(out, "  analytics (Node.js)      stopped")
}

// stop ends the service if report did not (an early return).
func (n *demoNode) stop() {
	if n != nil {
		_ = n.p.Stop(5 * time.Second)
	}
}
