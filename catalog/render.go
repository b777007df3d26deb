package catalog

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Formats names the renderings Render knows.
var Formats = []string{"text", "mermaid", "dot", "json", "asyncapi"}

// Render writes the graph in format (one of Formats).
func (g *Graph) Render(w io.Writer, format string, opts AsyncAPIOptions) error {
	switch format {
	case "text":
		return g.WriteText(w)
	case "mermaid":
		return g.WriteMermaid(w)
	case "dot":
		return g.WriteDOT(w)
	case "json":
		return g.WriteJSON(w)
	case "asyncapi":
		return g.WriteAsyncAPI(w, opts)
	}
	return fmt.Errorf("catalog: unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

// WriteText writes the system as a tree: each service with what it
// records, translates, handles, subscribes to and sends; then every public
// event with its producers and consumers; then the warnings.
func (g *Graph) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, m := range g.Manifests {
		// Instances are known only for manifests read from a running
		// system; a file's manifests say nothing about them.
		status := ""
		switch {
		case m.Stale:
			status = " (stale: no live instance)"
		case len(m.Instances) > 0:
			status = fmt.Sprintf(" (%d instance(s) live)", len(m.Instances))
		}
		version := ""
		if m.Version != "" {
			version = " " + m.Version
		}
		fmt.Fprintf(&b, "%s%s%s\n", m.Service, version, status)
		var lines []*Step
		line := func(text string, children ...*Step) *Step {
			s := &Step{Label: text, Children: children}
			lines = append(lines, s)
			return s
		}
		var records []string
		for _, c := range m.Contracts {
			if c.Kind == KindDomain {
				records = append(records, c.Name)
			}
		}
		if len(records) > 0 {
			line("records " + strings.Join(records, ", "))
		}
		for _, t := range m.Translations {
			line(fmt.Sprintf("translates %s → %s", t.From.Name, t.To))
		}
		for _, h := range m.Handlers {
			line(fmt.Sprintf("handles %s with %q%s", h.Event.Name, h.Name, emitsText(m, h.Emits)))
		}
		for _, s := range m.Subscriptions {
			verb := "subscribes"
			if s.Kind == KindNotification {
				verb = "receives"
			}
			text := fmt.Sprintf("%s %s as %q (accepts %s)%s", verb, s.Event, s.Name, versionList(s.Accepts), emitsText(m, s.Emits))
			if len(s.Channels) > 0 {
				text += ", sends on " + strings.Join(s.Channels, ", ")
			}
			line(text)
		}
		for _, e := range m.Emits {
			line("emits " + e.String())
		}
		g.tree(&b, lines, "", func(s *Step) string { return s.Label })
	}
	var events []*Step
	for _, n := range g.Nodes {
		if n.Kind != NodeIntegration && n.Kind != NodeNotification {
			continue
		}
		var ps, cs []string
		for _, p := range g.Producers(n.Name) {
			ps = append(ps, fmt.Sprintf("%s (v%d)", p.Service, p.Version))
		}
		for _, c := range g.Consumers(n.Name) {
			cs = append(cs, fmt.Sprintf("%s/%s (%s)", c.Service, c.Subscription.Name, versionList(c.Subscription.Accepts)))
		}
		events = append(events, &Step{Label: fmt.Sprintf("%s (%s %s): from %s; to %s", n.Name, n.Kind, versionList(n.Versions),
			orNone(ps), orNone(cs))})
	}
	if len(events) > 0 {
		b.WriteString("events\n")
		g.tree(&b, events, "", func(s *Step) string { return s.Label })
	}
	if len(g.Warnings) > 0 {
		b.WriteString("warnings\n")
		var ws []*Step
		for _, w := range g.Warnings {
			ws = append(ws, &Step{Label: w.String()})
		}
		g.tree(&b, ws, "", func(s *Step) string { return s.Label })
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func emitsText(m Manifest, refs []Ref) string {
	var rec, ntf []string
	for _, r := range refs {
		if m.kindOf(r.Name) == KindNotification {
			ntf = append(ntf, r.Name)
		} else {
			rec = append(rec, r.Name)
		}
	}
	var parts []string
	if len(rec) > 0 {
		parts = append(parts, "records "+strings.Join(rec, ", "))
	}
	if len(ntf) > 0 {
		parts = append(parts, "notifies "+strings.Join(ntf, ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	return " → " + strings.Join(parts, "; ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "nobody"
	}
	return strings.Join(s, ", ")
}

// shortIDs maps node ids to identifiers diagrams accept (n0, n1, ...).
func (g *Graph) shortIDs() map[string]string {
	ids := map[string]string{}
	for i, n := range g.Nodes {
		ids[n.ID] = fmt.Sprintf("n%d", i)
	}
	return ids
}

func (g *Graph) serviceNodes(service string) []Node {
	var out []Node
	for _, n := range g.Nodes {
		if n.Service == service {
			out = append(out, n)
		}
	}
	return out
}

func nodeLabel(n Node) string {
	switch n.Kind {
	case NodeIntegration, NodeNotification:
		return n.Name + " " + versionList(n.Versions)
	case NodeSubscription:
		return "sub " + n.Name
	case NodeHandler:
		return "handler " + n.Name
	}
	return n.Name
}

// WriteMermaid writes a Mermaid flowchart: a subgraph per service with its
// domain events, subscriptions, handlers and channels; the integration
// (hexagons) and notification events (rounded) between them.
func (g *Graph) WriteMermaid(w io.Writer) error {
	ids := g.shortIDs()
	q := func(s string) string { return strings.ReplaceAll(s, `"`, "#quot;") }
	shape := func(n Node) string {
		l := q(nodeLabel(n))
		switch n.Kind {
		case NodeIntegration:
			return fmt.Sprintf(`%s{{"%s"}}`, ids[n.ID], l)
		case NodeNotification:
			return fmt.Sprintf(`%s(["%s"])`, ids[n.ID], l)
		case NodeDomain:
			return fmt.Sprintf(`%s("%s")`, ids[n.ID], l)
		case NodeChannel:
			return fmt.Sprintf(`%s[/"%s"/]`, ids[n.ID], l)
		}
		return fmt.Sprintf(`%s["%s"]`, ids[n.ID], l)
	}
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for i, s := range g.Services {
		fmt.Fprintf(&b, "  subgraph s%d [\"%s\"]\n", i, q(serviceTitle(s)))
		for _, n := range g.serviceNodes(s.Name) {
			b.WriteString("    " + shape(n) + "\n")
		}
		b.WriteString("  end\n")
	}
	for _, n := range g.Nodes {
		if n.Service == "" {
			b.WriteString("  " + shape(n) + "\n")
		}
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %s -- \"%s\" --> %s\n", ids[e.From], q(edgeLabel(e)), ids[e.To])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// serviceTitle is a service's name in a diagram, marked when it is stale.
func serviceTitle(s ServiceInfo) string {
	if s.Stale {
		return s.Name + " (stale)"
	}
	return s.Name
}

// edgeLabel is an edge's kind and, if any, its label.
func edgeLabel(e Edge) string {
	if e.Label != "" {
		return string(e.Kind) + " " + e.Label
	}
	return string(e.Kind)
}

// WriteDOT writes a Graphviz digraph with a cluster per service.
func (g *Graph) WriteDOT(w io.Writer) error {
	ids := g.shortIDs()
	q := func(s string) string {
		return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
	}
	attrs := func(n Node) string {
		shape := map[NodeKind]string{NodeIntegration: "hexagon", NodeNotification: "ellipse", NodeDomain: "box",
			NodeSubscription: "component", NodeHandler: "component", NodeChannel: "parallelogram"}[n.Kind]
		style := ""
		if n.Kind == NodeDomain {
			style = ", style=rounded"
		}
		return fmt.Sprintf("[label=%s, shape=%s%s]", q(nodeLabel(n)), shape, style)
	}
	var b strings.Builder
	b.WriteString("digraph herald {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n")
	for i, s := range g.Services {
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%s;\n", i, q(serviceTitle(s)))
		for _, n := range g.serviceNodes(s.Name) {
			fmt.Fprintf(&b, "    %s %s;\n", ids[n.ID], attrs(n))
		}
		b.WriteString("  }\n")
	}
	for _, n := range g.Nodes {
		if n.Service == "" {
			fmt.Fprintf(&b, "  %s %s;\n", ids[n.ID], attrs(n))
		}
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %s -> %s [label=%s];\n", ids[e.From], ids[e.To], q(edgeLabel(e)))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the graph as JSON: services, nodes, edges, warnings and
// the manifests it was built from (ReadManifests reads it back).
func (g *Graph) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(g)
}

// EdgeStrings returns the edges as "from -kind-> to" strings, sorted; tests
// compare them.
func (g *Graph) EdgeStrings() []string {
	out := make([]string, len(g.Edges))
	for i, e := range g.Edges {
		out[i] = e.String()
	}
	slices.Sort(out)
	return out
}
