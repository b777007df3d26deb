package trace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Source is where trace records are read: the broker's trace stream.
// natsjs.Broker implements it.
type Source interface {
	// ReadTrace calls fn with every stored batch, oldest first, and returns
	// after the last one.
	ReadTrace(ctx context.Context, fn func(batch []byte) error) error
	// FollowTrace calls fn with every batch stored from now on until ctx
	// ends.
	FollowTrace(ctx context.Context, fn func(batch []byte) error) error
}

// ErrNotFound is returned by Collect when no record names the id.
var ErrNotFound = errors.New("herald/trace: no trace records for this id")

// Collect reads the records of one business flow from src: id is a
// correlation id, or the id of any event in the flow (then the flow is that
// event's). The records come in the order they were stored.
func Collect(ctx context.Context, src Source, id string) ([]Record, error) {
	if id == "" {
		return nil, errors.New("herald/trace: empty id")
	}
	var recs []Record
	flow := ""
	total := 0
	err := src.ReadTrace(ctx, func(b []byte) error {
		return DecodeBatch(b, func(r Record) error {
			total++
			switch {
			case r.CorrelationID == id:
				recs = append(recs, r)
			case r.EventID == id && flow == "":
				flow = r.CorrelationID
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(recs) > 0 || flow == "" {
		if len(recs) == 0 {
			if total == 0 {
				return nil, fmt.Errorf("%w: %s (the trace holds no records at all)", ErrNotFound, id)
			}
			return nil, fmt.Errorf("%w: %s (the trace holds %d records, of other flows)", ErrNotFound, id, total)
		}
		return recs, nil
	}
	return Collect(ctx, src, flow)
}

// Node is one event of a flow with the hops it went through.
type Node struct {
	EventID     string
	Type        string
	Kind        string
	CausationID string
	Hops        []Record // by time
	Children    []*Node  // the events it caused, by time
}

// First is the time of the node's first hop.
func (n *Node) First() time.Time { return n.Hops[0].Time }

// Tree is one business flow as a causal tree.
type Tree struct {
	CorrelationID string
	Roots         []*Node // events without a cause, and events whose cause has no record (see Missing)
	// Missing lists the causation ids that records name but no record
	// carries: gaps in the trace (records dropped, or older than the
	// stream keeps).
	Missing []string
	Start   time.Time // the earliest hop
	Records int
}

// Build arranges the records of one flow (from Collect) by causation.
func Build(recs []Record) *Tree {
	t := &Tree{Records: len(recs)}
	nodes := map[string]*Node{}
	var order []*Node
	for _, r := range recs {
		if t.CorrelationID == "" {
			t.CorrelationID = r.CorrelationID
		}
		if t.Start.IsZero() || r.Time.Before(t.Start) {
			t.Start = r.Time
		}
		n := nodes[r.EventID]
		if n == nil {
			n = &Node{EventID: r.EventID, Type: r.Type, Kind: string(r.Kind), CausationID: r.CausationID}
			nodes[r.EventID] = n
			order = append(order, n)
		}
		n.Hops = append(n.Hops, r)
	}
	missing := map[string]bool{}
	for _, n := range order {
		slices.SortStableFunc(n.Hops, func(a, b Record) int { return a.Time.Compare(b.Time) })
	}
	for _, n := range order {
		p := nodes[n.CausationID]
		switch {
		case n.CausationID == "" || p == n:
			t.Roots = append(t.Roots, n)
		case p == nil:
			t.Roots = append(t.Roots, n)
			if !missing[n.CausationID] {
				missing[n.CausationID] = true
				t.Missing = append(t.Missing, n.CausationID)
			}
		default:
			p.Children = append(p.Children, n)
		}
	}
	byTime := func(a, b *Node) int { return a.First().Compare(b.First()) }
	slices.SortStableFunc(t.Roots, byTime)
	for _, n := range order {
		slices.SortStableFunc(n.Children, byTime)
	}
	return t
}

// Walk calls fn for every node, parents before children, with its depth.
func (t *Tree) Walk(fn func(n *Node, depth int)) {
	var walk func(n *Node, d int)
	walk = func(n *Node, d int) {
		fn(n, d)
		for _, c := range n.Children {
			walk(c, d+1)
		}
	}
	for _, r := range t.Roots {
		walk(r, 0)
	}
}

// Format writes the tree: each event with its hops, each hop with its offset
// from the flow's first hop and how long it took.
func (t *Tree) Format(w io.Writer) error {
	services := map[string]bool{}
	t.Walk(func(n *Node, _ int) {
		for _, h := range n.Hops {
			services[h.Service] = true
		}
	})
	var end time.Time
	t.Walk(func(n *Node, _ int) {
		for _, h := range n.Hops {
			if e := h.Time.Add(h.Duration); e.After(end) {
				end = e
			}
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "flow %s: %d records, %d services, %s, from %s\n", t.CorrelationID, t.Records, len(services),
		dur(end.Sub(t.Start)), t.Start.UTC().Format(time.RFC3339Nano))
	t.Walk(func(n *Node, depth int) {
		indent := strings.Repeat("  ", depth)
		fmt.Fprintf(&b, "%s%s %s %s\n", indent, n.Type, n.Kind, n.EventID)
		for _, h := range n.Hops {
			where := h.Service
			if h.Subscription != "" {
				where += "/" + h.Subscription
			}
			fmt.Fprintf(&b, "%s  %10s  %-11s %-34s %-9s %8s", indent, "+"+dur(h.Time.Sub(t.Start)), h.Hop, where, h.Outcome, dur(h.Duration))
			if h.Attempt > 1 {
				fmt.Fprintf(&b, "  attempt %d", h.Attempt)
			}
			if h.Reason != "" {
				fmt.Fprintf(&b, "  %s", h.Reason)
			}
			if h.Error != "" {
				fmt.Fprintf(&b, "  err: %s", h.Error)
			}
			b.WriteByte('\n')
		}
	})
	for _, m := range t.Missing {
		fmt.Fprintf(&b, "gap: no record of event %s, which caused events above\n", m)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// dur prints d in milliseconds with a precision that suits it.
func dur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 0:
		return fmt.Sprintf("%.3fms", ms)
	case ms < 10:
		return fmt.Sprintf("%.3fms", ms)
	case ms < 10000:
		return fmt.Sprintf("%.1fms", ms)
	default:
		return fmt.Sprintf("%.2fs", ms/1000)
	}
}
