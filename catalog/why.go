package catalog

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// ErrUnknownEvent is returned by Why for an event no manifest mentions.
var ErrUnknownEvent = errors.New("catalog: unknown event")

// Step is one node of the chain Why follows.
type Step struct {
	Node Node `json:"node"`
	// Via is the edge that led here from the parent step ("" at the root).
	Via   EdgeKind `json:"via,omitempty"`
	Label string   `json:"label,omitempty"`
	// Seen marks a node already expanded elsewhere in the chain (a cycle or
	// a second path to it); its children are not repeated.
	Seen     bool    `json:"seen,omitempty"`
	Children []*Step `json:"children,omitempty"`
}

// Why returns, for the event called name, everything it transitively causes
// across services: its translations, the integration events they publish,
// the subscriptions that receive them, what those record and publish, and
// the notifications they emit and the channels they are sent on. name is an
// event's full name or a suffix of it at a dot ("order.confirmed" finds
// "shop.order.confirmed"); more than one match is an error listing them.
func (g *Graph) Why(name string) (*Step, error) {
	id, err := g.resolve(name)
	if err != nil {
		return nil, err
	}
	n, _ := g.Node(id)
	root := &Step{Node: n}
	expanded := map[string]bool{id: true}
	g.expand(root, expanded)
	return root, nil
}

func (g *Graph) resolve(name string) (string, error) {
	var exact, suffix []string
	for _, n := range g.Nodes {
		if n.Kind != NodeDomain && n.Kind != NodeIntegration && n.Kind != NodeNotification {
			continue
		}
		switch {
		case n.Name == name:
			exact = append(exact, n.ID)
		case strings.HasSuffix(n.Name, "."+name):
			suffix = append(suffix, n.ID)
		}
	}
	matches := exact
	if len(matches) == 0 {
		matches = suffix
	}
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("%w: %q (no service's manifest records, publishes or subscribes to it)", ErrUnknownEvent, name)
	case 1:
		return matches[0], nil
	}
	return "", fmt.Errorf("catalog: %q is ambiguous: %s", name, strings.Join(matches, ", "))
}

func (g *Graph) expand(s *Step, expanded map[string]bool) {
	for _, e := range g.Out(s.Node.ID) {
		n, _ := g.Node(e.To)
		child := &Step{Node: n, Via: e.Kind, Label: e.Label}
		s.Children = append(s.Children, child)
		if expanded[n.ID] {
			child.Seen = true
			continue
		}
		expanded[n.ID] = true
		g.expand(child, expanded)
	}
}

// Walk calls fn for every step of the chain, depth first, with its path
// from the root (the root first, s last).
func (s *Step) Walk(fn func(path []*Step)) {
	var walk func(path []*Step)
	walk = func(path []*Step) {
		fn(path)
		for _, c := range path[len(path)-1].Children {
			walk(append(slices.Clone(path), c))
		}
	}
	walk([]*Step{s})
}

// Reaches reports whether the chain reaches the node with id.
func (s *Step) Reaches(id string) bool {
	found := false
	s.Walk(func(path []*Step) {
		if path[len(path)-1].Node.ID == id {
			found = true
		}
	})
	return found
}

// describe is a step as one line of text.
func (g *Graph) describe(s *Step) string {
	n := s.Node
	var b strings.Builder
	switch n.Kind {
	case NodeIntegration, NodeNotification:
		verb := map[EdgeKind]string{EdgeTranslates: "publishes ", EdgeNotifies: "notifies "}[s.Via]
		label := s.Label
		if s.Via == "" {
			label = versionList(n.Versions)
		}
		fmt.Fprintf(&b, "%s%s (%s %s)", verb, n.Name, n.Kind, label)
		if s.Via == "" {
			var ps []string
			for _, p := range g.Producers(n.Name) {
				from := ""
				if p.From != "" {
					from = " from " + p.From
				}
				ps = append(ps, fmt.Sprintf("%s v%d%s", p.Service, p.Version, from))
			}
			if len(ps) > 0 {
				fmt.Fprintf(&b, " — produced by %s", strings.Join(ps, "; "))
			} else {
				b.WriteString(" — no service produces it")
			}
		}
	case NodeDomain:
		verb := map[EdgeKind]string{EdgeRecords: "records "}[s.Via]
		fmt.Fprintf(&b, "%s%s (domain event of %s)", verb, n.Name, n.Service)
	case NodeSubscription:
		fmt.Fprintf(&b, "%s/%s receives it (%s)", n.Service, n.Name, s.Label)
	case NodeHandler:
		fmt.Fprintf(&b, "%s handler %q runs in the same transaction", n.Service, n.Name)
	case NodeChannel:
		fmt.Fprintf(&b, "sends %s (%s)", n.Name, n.Service)
	}
	if s.Seen && len(g.Out(n.ID)) > 0 {
		b.WriteString(" (continues above)")
	}
	return b.String()
}

// WriteWhy writes the chain as an indented tree.
func (g *Graph) WriteWhy(w io.Writer, s *Step) error {
	var b strings.Builder
	b.WriteString(g.describe(s) + "\n")
	g.tree(&b, s.Children, "", func(c *Step) string { return g.describe(c) })
	_, err := io.WriteString(w, b.String())
	return err
}

// tree writes children with box-drawing branches.
func (g *Graph) tree(b *strings.Builder, children []*Step, indent string, line func(*Step) string) {
	for i, c := range children {
		branch, next := "├── ", "│   "
		if i == len(children)-1 {
			branch, next = "└── ", "    "
		}
		b.WriteString(indent + branch + line(c) + "\n")
		g.tree(b, c.Children, indent+next, line)
	}
}
