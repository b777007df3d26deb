package catalog

import (
	"fmt"
	"slices"
	"strings"
)

// WarningKind classifies a warning about the system.
type WarningKind string

// The kinds of warnings.
const (
	// WarnUnconsumed: an event is published (or emitted) and nobody
	// subscribes to it.
	WarnUnconsumed WarningKind = "unconsumed"
	// WarnUnpublished: a subscription to an event nobody publishes.
	WarnUnpublished WarningKind = "unpublished"
	// WarnVersion: a producer publishes a version a consumer does not accept
	// (those events become the consumer's dead letters).
	WarnVersion WarningKind = "version"
	// WarnSchema: producer and consumer disagree about the schema of a
	// version both use (a field removed or retyped).
	WarnSchema WarningKind = "schema"
	// WarnStale: a service has no live instance.
	WarnStale WarningKind = "stale"
)

// Warning is something in the system that does not line up.
type Warning struct {
	Kind    WarningKind `json:"kind"`
	Event   string      `json:"event,omitempty"`
	Service string      `json:"service,omitempty"`
	Message string      `json:"message"`
}

// String is "kind: message".
func (w Warning) String() string { return string(w.Kind) + ": " + w.Message }

func warnings(g *Graph) []Warning {
	var ws []Warning
	add := func(kind WarningKind, event, service, format string, args ...any) {
		ws = append(ws, Warning{Kind: kind, Event: event, Service: service, Message: fmt.Sprintf(format, args...)})
	}
	for _, n := range g.Nodes {
		if n.Kind != NodeIntegration && n.Kind != NodeNotification {
			continue
		}
		producers, consumers := g.Producers(n.Name), g.Consumers(n.Name)
		verb := "publishes"
		if n.Kind == NodeNotification {
			verb = "emits"
		}
		switch {
		case len(producers) > 0 && len(consumers) == 0:
			add(WarnUnconsumed, n.Name, producers[0].Service, "%s %s %s and no service subscribes to it", serviceList(producers), verb, n.Name)
		case len(producers) == 0 && len(consumers) > 0:
			add(WarnUnpublished, n.Name, consumers[0].Service, "%s subscribe(s) to %s and no service %s it", consumerList(consumers), n.Name, verb)
		}
		for _, p := range producers {
			pm := g.manifest(p.Service)
			pc, _ := pm.Contract(n.Name, p.Version)
			for _, c := range consumers {
				if !slices.Contains(c.Subscription.Accepts, p.Version) {
					add(WarnVersion, n.Name, c.Service, "%s %s %s v%d, which %s/%s does not accept (it takes %s): those events become its dead letters",
						p.Service, verb, n.Name, p.Version, c.Service, c.Subscription.Name, versionList(c.Subscription.Accepts))
					continue
				}
				cc, ok := g.manifest(c.Service).Contract(n.Name, p.Version)
				if !ok || len(cc.Schema) == 0 || len(pc.Schema) == 0 {
					continue
				}
				changes, err := DiffSchemas(cc.Schema, pc.Schema)
				if err != nil {
					add(WarnSchema, n.Name, c.Service, "%s v%d: cannot compare the schemas of %s and %s: %v", n.Name, p.Version, p.Service, c.Service, err)
					continue
				}
				for _, ch := range changes {
					if ch.Kind == Removed || ch.Kind == Retyped {
						add(WarnSchema, n.Name, c.Service, "%s v%d: %s in %s's schema, which %s/%s expects: a schema change that breaks an accepted version",
							n.Name, p.Version, ch, p.Service, c.Service, c.Subscription.Name)
					}
				}
			}
		}
	}
	for _, s := range g.Services {
		if s.Stale {
			add(WarnStale, "", s.Name, "service %s has no live instance (stopped or crashed); its manifest may be out of date", s.Name)
		}
	}
	slices.SortStableFunc(ws, func(a, b Warning) int { return strings.Compare(a.Message, b.Message) })
	return ws
}

func serviceList(ps []Producer) string {
	var names []string
	for _, p := range ps {
		if !slices.Contains(names, p.Service) {
			names = append(names, p.Service)
		}
	}
	return strings.Join(names, ", ")
}

func consumerList(cs []Consumer) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Service + "/" + c.Subscription.Name
	}
	return strings.Join(names, ", ")
}
