// Package catalog is the topology of a herald system: what each service
// records, translates, publishes, subscribes to, notifies and sends, with a
// JSON Schema for every contract. Services publish a Manifest when they start
// (herald.Service.Manifest builds it from the registrations); the catalog
// builds one Graph from the manifests of every service, answers "what happens
// when X is published" (Why), warns about contracts that do not line up
// (Warnings), and renders the system as a text tree, Mermaid, Graphviz DOT,
// JSON and an AsyncAPI 3.0 document. Lock files (ReadLock, CheckLock) catch
// breaking changes of a contract whose version was not bumped.
//
// The package does not import the herald runtime (the root package builds
// manifests and imports this one): tools read manifests through
// broker.ManifestStore (Load) or from JSON files (ReadManifests).
package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// The kinds of events, as manifests spell them.
const (
	KindDomain       = "domain"
	KindIntegration  = "integration"
	KindNotification = "notification"
)

// ErrInvalidManifest is wrapped by every error about a malformed manifest.
var ErrInvalidManifest = errors.New("catalog: invalid manifest")

// Manifest is what one service declares about itself.
type Manifest struct {
	// Service is the service's name.
	Service string `json:"service"`
	// Version is the service's own version (herald.ServiceVersion, or the
	// program's build information).
	Version string `json:"version,omitempty"`
	// Herald is the version of the herald module the service runs.
	Herald string `json:"herald,omitempty"`
	// Contracts are every event contract the service uses, with schemas:
	// the domain events it records, the integration events it publishes or
	// subscribes to (every version it knows), and its notification events.
	Contracts []Contract `json:"contracts"`
	// Translations turn the service's domain events into integration events:
	// what it publishes.
	Translations []Translation `json:"translations,omitempty"`
	// Handlers are the domain handlers, run in the transaction that records
	// their event.
	Handlers []Handler `json:"handlers,omitempty"`
	// Subscriptions are the integration-event subscriptions and the
	// notification routes (Receive) of the service.
	Subscriptions []Subscription `json:"subscriptions,omitempty"`
	// Emits are the notification events the service emits (herald.Notify).
	Emits []Ref `json:"emits,omitempty"`
	// Updated is when the manifest was built.
	Updated time.Time `json:"updated"`

	// Instances are the live instances of the service, filled in by the
	// store a manifest was read from (not part of what a service publishes).
	Instances []Instance `json:"instances,omitempty"`
	// Stale is set by the reader when the service has no live instance.
	Stale bool `json:"stale,omitempty"`
}

// Instance is one running process of a service.
type Instance struct {
	ID       string    `json:"id"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"last_seen"`
	Host     string    `json:"host,omitempty"`
}

// Contract is one event contract with the JSON Schema of its payload.
type Contract struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Kind    string `json:"kind"`
	// GoType is the payload's Go type, for people reading the catalog.
	GoType string `json:"go_type,omitempty"`
	// ContentType is the codec's content type (application/json by default).
	ContentType string `json:"content_type,omitempty"`
	// Keyed says whether the contract has a partition key (herald.KeyBy).
	Keyed bool `json:"keyed,omitempty"`
	// Schema is the JSON Schema (2020-12) generated from GoType.
	Schema json.RawMessage `json:"schema,omitempty"`
}

// Ref names one version of an event contract.
type Ref struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// String is "name vN".
func (r Ref) String() string { return fmt.Sprintf("%s v%d", r.Name, r.Version) }

// Translation turns a domain event into an integration event.
type Translation struct {
	From Ref `json:"from"`
	To   Ref `json:"to"`
}

// Handler is a domain handler.
type Handler struct {
	Name  string `json:"name"`
	Event Ref    `json:"event"`
	// Emits are the domain events it records and the notifications it
	// emits, as declared (herald.Emits).
	Emits []Ref `json:"emits,omitempty"`
}

// Subscription is a durable subscription of the service to integration
// events (herald.Subscribe) or notification events (herald.Receive).
type Subscription struct {
	Name string `json:"name"`
	// Event is the subscribed event type.
	Event string `json:"event"`
	// Kind is integration or notification.
	Kind string `json:"kind"`
	// Version is the version the handler takes.
	Version int `json:"version"`
	// Accepts are the versions the subscription takes: Version and every
	// older one an upcaster chain converts to it.
	Accepts []int `json:"accepts"`
	// Emits are the domain events the handler records and the
	// notifications it emits, as declared (herald.Emits).
	Emits []Ref `json:"emits,omitempty"`
	// Channels are the channels a notification route sends on
	// (herald.Delivers; notify.Route declares them).
	Channels []string `json:"channels,omitempty"`
}

// Contract returns the contract name at version, if the manifest has it.
func (m *Manifest) Contract(name string, version int) (Contract, bool) {
	for _, c := range m.Contracts {
		if c.Name == name && c.Version == version {
			return c, true
		}
	}
	return Contract{}, false
}

// kindOf returns the kind of the contract called name in m ("" if none).
func (m *Manifest) kindOf(name string) string {
	for _, c := range m.Contracts {
		if c.Name == name {
			return c.Kind
		}
	}
	return ""
}

// Publishes returns the integration events the service publishes (the
// targets of its translations), sorted.
func (m *Manifest) Publishes() []Ref {
	var out []Ref
	for _, t := range m.Translations {
		if !slices.Contains(out, t.To) {
			out = append(out, t.To)
		}
	}
	sortRefs(out)
	return out
}

// Validate reports what is wrong with m, naming it.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: service %q: %s", ErrInvalidManifest, m.Service, fmt.Sprintf(format, args...))
	}
	if m.Service == "" {
		return fmt.Errorf("%w: no service name", ErrInvalidManifest)
	}
	seen := map[Ref]bool{}
	for _, c := range m.Contracts {
		switch {
		case c.Name == "":
			return bad("a contract without a name")
		case c.Version < 1:
			return bad("contract %q has version %d < 1", c.Name, c.Version)
		case c.Kind != KindDomain && c.Kind != KindIntegration && c.Kind != KindNotification:
			return bad("contract %q has unknown kind %q", c.Name, c.Kind)
		case seen[Ref{c.Name, c.Version}]:
			return bad("contract %s listed twice", Ref{c.Name, c.Version})
		}
		if k := m.kindOf(c.Name); k != c.Kind {
			return bad("contract %q is both %s and %s", c.Name, k, c.Kind)
		}
		seen[Ref{c.Name, c.Version}] = true
	}
	known := func(r Ref, kinds ...string) error {
		if !seen[r] {
			return bad("%s is not among its contracts", r)
		}
		if k := m.kindOf(r.Name); !slices.Contains(kinds, k) {
			return bad("%s is a %s event, want %s", r, k, strings.Join(kinds, " or "))
		}
		return nil
	}
	for _, t := range m.Translations {
		if err := errors.Join(known(t.From, KindDomain), known(t.To, KindIntegration)); err != nil {
			return err
		}
	}
	for _, h := range m.Handlers {
		if err := known(h.Event, KindDomain); err != nil {
			return err
		}
		for _, e := range h.Emits {
			if err := known(e, KindDomain, KindNotification); err != nil {
				return err
			}
		}
	}
	for _, s := range m.Subscriptions {
		if s.Name == "" {
			return bad("a subscription without a name")
		}
		if err := known(Ref{s.Event, s.Version}, KindIntegration, KindNotification); err != nil {
			return err
		}
		if !slices.Contains(s.Accepts, s.Version) {
			return bad("subscription %q does not accept its own version %d", s.Name, s.Version)
		}
		for _, e := range s.Emits {
			if err := known(e, KindDomain, KindNotification); err != nil {
				return err
			}
		}
	}
	for _, e := range m.Emits {
		if err := known(e, KindNotification); err != nil {
			return err
		}
	}
	return nil
}

// ReadManifests reads manifests from JSON: one manifest, an array of them,
// or an object with a "manifests" array (what `herald catalog --format json`
// writes). Each is validated.
func ReadManifests(r io.Reader) ([]Manifest, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("catalog: read manifests: %w", err)
	}
	trimmed := strings.TrimSpace(string(data))
	var ms []Manifest
	switch {
	case strings.HasPrefix(trimmed, "["):
		err = json.Unmarshal(data, &ms)
	case strings.HasPrefix(trimmed, "{"):
		var probe struct {
			Manifests []Manifest `json:"manifests"`
			Service   string     `json:"service"`
		}
		if err = json.Unmarshal(data, &probe); err != nil {
			break
		}
		if probe.Service == "" && probe.Manifests == nil {
			return nil, fmt.Errorf("%w: JSON object with neither \"service\" nor \"manifests\"", ErrInvalidManifest)
		}
		if probe.Service != "" {
			var m Manifest
			err = json.Unmarshal(data, &m)
			ms = []Manifest{m}
		} else {
			ms = probe.Manifests
		}
	default:
		return nil, fmt.Errorf("%w: want a JSON object or array", ErrInvalidManifest)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	for i := range ms {
		if err := ms[i].Validate(); err != nil {
			return nil, err
		}
	}
	return ms, nil
}

func sortRefs(rs []Ref) {
	slices.SortFunc(rs, func(a, b Ref) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
}
