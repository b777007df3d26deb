package catalog

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// NodeKind is what a node of the graph stands for.
type NodeKind string

// The kinds of nodes.
const (
	NodeDomain       NodeKind = "domain"       // a domain event of one service
	NodeIntegration  NodeKind = "integration"  // an integration event (public)
	NodeNotification NodeKind = "notification" // a notification event
	NodeSubscription NodeKind = "subscription" // a subscription or notification route of a service
	NodeHandler      NodeKind = "handler"      // a domain handler of a service
	NodeChannel      NodeKind = "channel"      // a channel a notifier sends on (email, push, ...)
)

// EdgeKind is what an edge of the graph means.
type EdgeKind string

// The kinds of edges.
const (
	EdgeTranslates EdgeKind = "translates" // domain event → integration event
	EdgeDelivers   EdgeKind = "delivers"   // integration or notification event → subscription
	EdgeHandles    EdgeKind = "handles"    // domain event → domain handler
	EdgeRecords    EdgeKind = "records"    // subscription or handler → domain event
	EdgeNotifies   EdgeKind = "notifies"   // subscription or handler → notification event
	EdgeSends      EdgeKind = "sends"      // notification route → channel
)

// Node is one node of the graph. IDs are "dom:<service>/<event>",
// "int:<event>", "ntf:<event>", "sub:<service>/<subscription>",
// "hdl:<service>/<event>/<handler>" and "chan:<service>/<channel>".
type Node struct {
	ID   string   `json:"id"`
	Kind NodeKind `json:"kind"`
	// Name is the event, subscription, handler or channel name.
	Name string `json:"name"`
	// Service owns the node ("" for integration and notification events,
	// which belong to the system).
	Service string `json:"service,omitempty"`
	// Versions are the versions of an event that any service knows.
	Versions []int `json:"versions,omitempty"`
}

// Edge is one directed edge of the graph.
type Edge struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	Kind  EdgeKind `json:"kind"`
	Label string   `json:"label,omitempty"`
}

// String is "from -kind-> to".
func (e Edge) String() string { return e.From + " -" + string(e.Kind) + "-> " + e.To }

// ServiceInfo is a service as the graph shows it.
type ServiceInfo struct {
	Name      string `json:"name"`
	Version   string `json:"version,omitempty"`
	Instances int    `json:"instances"`
	Stale     bool   `json:"stale,omitempty"`
}

// Graph is the whole system built from the services' manifests.
type Graph struct {
	Services  []ServiceInfo `json:"services"`
	Nodes     []Node        `json:"nodes"`
	Edges     []Edge        `json:"edges"`
	Warnings  []Warning     `json:"warnings,omitempty"`
	Manifests []Manifest    `json:"manifests"`

	byID map[string]int
	out  map[string][]Edge
}

// Build returns the graph of the services in ms (one manifest per service;
// a later one of the same service replaces an earlier one).
func Build(ms []Manifest) (*Graph, error) {
	bySvc := map[string]Manifest{}
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			return nil, err
		}
		bySvc[m.Service] = m
	}
	g := &Graph{byID: map[string]int{}, out: map[string][]Edge{}}
	for _, name := range sortedKeys(bySvc) {
		g.Manifests = append(g.Manifests, bySvc[name])
	}
	for _, m := range g.Manifests {
		g.Services = append(g.Services, ServiceInfo{Name: m.Service, Version: m.Version, Instances: len(m.Instances), Stale: m.Stale})
		g.addManifest(m)
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	for i, n := range g.Nodes {
		slices.Sort(n.Versions)
		g.Nodes[i].Versions = slices.Compact(n.Versions)
		g.byID[n.ID] = i
	}
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To), strings.Compare(string(a.Kind), string(b.Kind)))
	})
	g.Edges = slices.Compact(g.Edges)
	for _, e := range g.Edges {
		g.out[e.From] = append(g.out[e.From], e)
	}
	g.Warnings = warnings(g)
	return g, nil
}

// EventID returns the node id of the event name of the given kind, for
// service's domain events.
func EventID(kind, service, name string) string {
	switch kind {
	case KindDomain:
		return "dom:" + service + "/" + name
	case KindIntegration:
		return "int:" + name
	default:
		return "ntf:" + name
	}
}

func (g *Graph) node(n Node) string {
	for i := range g.Nodes {
		if g.Nodes[i].ID == n.ID {
			g.Nodes[i].Versions = append(g.Nodes[i].Versions, n.Versions...)
			return n.ID
		}
	}
	g.Nodes = append(g.Nodes, n)
	return n.ID
}

func (g *Graph) event(m Manifest, r Ref) string {
	kind := m.kindOf(r.Name)
	owner := "" // integration and notification events belong to the system
	if kind == KindDomain {
		owner = m.Service
	}
	return g.node(Node{ID: EventID(kind, m.Service, r.Name), Kind: NodeKind(kind), Name: r.Name, Service: owner, Versions: []int{r.Version}})
}

func (g *Graph) edge(from, to string, kind EdgeKind, label string) {
	g.Edges = append(g.Edges, Edge{From: from, To: to, Kind: kind, Label: label})
}

func (g *Graph) addManifest(m Manifest) {
	for _, c := range m.Contracts {
		g.event(m, Ref{c.Name, c.Version})
	}
	emits := func(from string, refs []Ref) {
		for _, r := range refs {
			kind := EdgeRecords
			if m.kindOf(r.Name) == KindNotification {
				kind = EdgeNotifies
			}
			g.edge(from, g.event(m, r), kind, fmt.Sprintf("v%d", r.Version))
		}
	}
	for _, t := range m.Translations {
		g.edge(g.event(m, t.From), g.event(m, t.To), EdgeTranslates, fmt.Sprintf("v%d", t.To.Version))
	}
	for _, h := range m.Handlers {
		id := g.node(Node{ID: "hdl:" + m.Service + "/" + h.Event.Name + "/" + h.Name, Kind: NodeHandler, Name: h.Name, Service: m.Service})
		g.edge(g.event(m, h.Event), id, EdgeHandles, "")
		emits(id, h.Emits)
	}
	for _, s := range m.Subscriptions {
		id := g.node(Node{ID: "sub:" + m.Service + "/" + s.Name, Kind: NodeSubscription, Name: s.Name, Service: m.Service})
		g.edge(g.event(m, Ref{s.Event, s.Version}), id, EdgeDelivers, "accepts "+versionList(s.Accepts))
		emits(id, s.Emits)
		for _, ch := range s.Channels {
			cid := g.node(Node{ID: "chan:" + m.Service + "/" + ch, Kind: NodeChannel, Name: ch, Service: m.Service})
			g.edge(id, cid, EdgeSends, "")
		}
	}
}

func versionList(vs []int) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("v%d", v)
	}
	return strings.Join(parts, ",")
}

// Node returns the node with id.
func (g *Graph) Node(id string) (Node, bool) {
	i, ok := g.byID[id]
	if !ok {
		return Node{}, false
	}
	return g.Nodes[i], true
}

// Out returns the edges leaving id, sorted by target.
func (g *Graph) Out(id string) []Edge { return g.out[id] }

// In returns the edges arriving at id.
func (g *Graph) In(id string) []Edge {
	var out []Edge
	for _, e := range g.Edges {
		if e.To == id {
			out = append(out, e)
		}
	}
	return out
}

// Producers returns who publishes an integration event or emits a
// notification event: service name and version for each.
func (g *Graph) Producers(name string) []Producer {
	var out []Producer
	for _, m := range g.Manifests {
		for _, t := range m.Translations {
			if t.To.Name == name {
				out = append(out, Producer{Service: m.Service, Version: t.To.Version, From: t.From.Name})
			}
		}
		for _, e := range m.Emits {
			if e.Name == name {
				out = append(out, Producer{Service: m.Service, Version: e.Version})
			}
		}
	}
	slices.SortFunc(out, func(a, b Producer) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), a.Version-b.Version, strings.Compare(a.From, b.From))
	})
	return slices.Compact(out)
}

// Producer is a service that publishes (or emits) an event.
type Producer struct {
	Service string `json:"service"`
	Version int    `json:"version"`
	// From is the domain event the integration event is translated from.
	From string `json:"from,omitempty"`
}

// Consumer is a subscription to an event.
type Consumer struct {
	Service      string
	Subscription Subscription
}

// Consumers returns the subscriptions to event name.
func (g *Graph) Consumers(name string) []Consumer {
	var out []Consumer
	for _, m := range g.Manifests {
		for _, s := range m.Subscriptions {
			if s.Event == name {
				out = append(out, Consumer{Service: m.Service, Subscription: s})
			}
		}
	}
	return out
}

// manifest returns the manifest of service.
func (g *Graph) manifest(service string) *Manifest {
	for i := range g.Manifests {
		if g.Manifests[i].Service == service {
			return &g.Manifests[i]
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
