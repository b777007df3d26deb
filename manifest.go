package herald

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/catalog"
)

// ServiceVersion sets the service's version as its manifest shows it
// (default: the program's module version from its build information, with
// the VCS revision when the module has no version). It is not a contract's
// Version: it names the build of the service, not the shape of an event.
func ServiceVersion(v string) Option {
	return serviceOption(func(c *config) error {
		if strings.TrimSpace(v) == "" || len(v) > 100 {
			return fmt.Errorf("%w: version %q: want 1 to 100 characters", ErrInvalidOption, v)
		}
		c.version = v
		return nil
	})
}

// WithVersion sets the service's version as its manifest shows it.
//
// Deprecated: use ServiceVersion.
func WithVersion(v string) Option { return ServiceVersion(v) }

type handleConfig struct {
	emits []Contract
}

// HandlerEmits is Emits for a domain handler (Handle).
//
// Deprecated: use Emits, which Subscribe, Receive and Handle all take.
func HandlerEmits(cs ...Contract) HandleOption { return Emits(cs...) }

func checkEmits(cs []Contract) error {
	for _, c := range cs {
		if c == nil {
			return fmt.Errorf("%w: Emits: nil contract", ErrInvalidOption)
		}
		if c.Kind() == KindIntegration {
			return fmt.Errorf("%w: Emits %s: an integration event leaves a service only through Translate; declare the domain event the handler records",
				ErrInvalidOption, describe(c))
		}
	}
	return nil
}

// Delivers declares, on a Receive, the channels its handler sends the
// notification on (email, push, ...), for the catalog. notify.Route
// declares them itself.
func Delivers(channels ...string) SubscribeOption {
	return subscribeOption(func(c *subConfig) error {
		for _, ch := range channels {
			if ch == "" || len(ch) > 100 || strings.ContainsAny(ch, "/* ") || !headerSafe(ch) {
				return fmt.Errorf("%w: Delivers: channel %q: want 1 to 100 characters without '/', '*', spaces or control characters", ErrInvalidOption, ch)
			}
			if !slices.Contains(c.channels, ch) {
				c.channels = append(c.channels, ch)
			}
		}
		return nil
	})
}

// DescribeContracts returns the catalog description of contracts, each with
// the JSON Schema of its payload type.
func DescribeContracts(cs ...Contract) ([]catalog.Contract, error) {
	out := make([]catalog.Contract, 0, len(cs))
	for _, c := range cs {
		if c == nil {
			return nil, fmt.Errorf("%w: nil contract", ErrInvalidContract)
		}
		if err := validate(c); err != nil {
			return nil, err
		}
		b := c.base()
		schema, err := catalog.SchemaOf(b.payload)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b, err)
		}
		out = append(out, catalog.Contract{
			Name: b.name, Version: b.version, Kind: string(b.kind), GoType: b.payload.String(),
			ContentType: b.codec.ContentType(), Keyed: b.keyFn != nil, Schema: schema,
		})
	}
	return out, nil
}

func ref(c Contract) catalog.Ref { return catalog.Ref{Name: c.Name(), Version: c.Version()} }

func refs(cs []Contract) []catalog.Ref {
	out := make([]catalog.Ref, 0, len(cs))
	for _, c := range cs {
		if r := ref(c); !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// Manifest describes the service for the catalog: its name and version,
// every contract it uses with its JSON Schema, its translations, domain
// handlers and subscriptions (with the versions each accepts through
// upcasters), and the effects declared with Emits and
// Delivers. A started service publishes it where the broker keeps manifests
// (broker.ManifestStore).
func (s *Service) Manifest() (catalog.Manifest, error) {
	contracts, err := DescribeContracts(s.reg.Contracts()...)
	if err != nil {
		return catalog.Manifest{}, fmt.Errorf("service %s: manifest: %w", s.name, err)
	}
	m := catalog.Manifest{Service: s.name, Version: s.cfg.version, Herald: heraldVersion(), Contracts: contracts, Updated: time.Now().UTC()}
	if m.Version == "" {
		m.Version = programVersion()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var emitted []Contract
	for from, trs := range s.translations {
		for _, tr := range trs {
			m.Translations = append(m.Translations, catalog.Translation{From: ref(from), To: ref(tr.target)})
		}
	}
	for c, hs := range s.handlers {
		for _, h := range hs {
			m.Handlers = append(m.Handlers, catalog.Handler{Name: h.name, Event: ref(c), Emits: refs(h.emits)})
			emitted = append(emitted, h.emits...)
		}
	}
	received := map[string]bool{}
	for _, sub := range s.subs {
		c := sub.contract
		m.Subscriptions = append(m.Subscriptions, catalog.Subscription{
			Name: sub.name, Event: c.Name(), Kind: string(c.Kind()), Version: c.Version(),
			Accepts: s.accepts(c), Emits: refs(sub.cfg.emits), Channels: slices.Clone(sub.cfg.channels),
		})
		emitted = append(emitted, sub.cfg.emits...)
		if c.Kind() == KindNotification {
			received[c.Name()] = true
		}
	}
	// Notifications it emits: the declared ones, and those it registered
	// without receiving them (Register is how a service notifies from Do).
	for _, c := range s.reg.Contracts() {
		if c.Kind() == KindNotification && !received[c.Name()] {
			emitted = append(emitted, c)
		}
	}
	for _, c := range emitted {
		if c.Kind() == KindNotification && !slices.Contains(m.Emits, ref(c)) {
			m.Emits = append(m.Emits, ref(c))
		}
	}
	sortManifest(&m)
	return m, nil
}

// accepts returns the versions a subscription to c takes: c's own and
// every older one an upcaster chain converts to it. Callers hold s.mu.
func (s *Service) accepts(c Contract) []int {
	out := []int{c.Version()}
	for v := c.Version() - 1; v >= 1; v-- {
		for at := v; ; {
			up, ok := s.upcasters[upcastKey{c.Name(), at}]
			if !ok {
				break
			}
			if up.to == c.Version() {
				out = append(out, v)
				break
			}
			at = up.to
		}
	}
	slices.Sort(out)
	return out
}

func sortManifest(m *catalog.Manifest) {
	cmpRef := func(a, b catalog.Ref) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Version - b.Version
	}
	slices.SortFunc(m.Translations, func(a, b catalog.Translation) int {
		if c := cmpRef(a.From, b.From); c != 0 {
			return c
		}
		return cmpRef(a.To, b.To)
	})
	slices.SortFunc(m.Handlers, func(a, b catalog.Handler) int {
		if c := cmpRef(a.Event, b.Event); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	slices.SortFunc(m.Subscriptions, func(a, b catalog.Subscription) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(m.Emits, cmpRef)
}

func heraldVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if bi.Main.Path == "github.com/heraldhq/herald" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/heraldhq/herald" {
			return d.Version
		}
	}
	return ""
}

func programVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		for _, st := range bi.Settings {
			if st.Key == "vcs.revision" && len(st.Value) >= 12 {
				return "(devel) " + st.Value[:12]
			}
		}
	}
	return v
}

// catalogTimeout bounds each call to the manifest store, so that a broker
// without a usable key-value store cannot hold up Start or Close.
const catalogTimeout = 5 * time.Second

// announce publishes the manifest and the first heartbeat of this instance
// when the broker keeps manifests, and returns the heartbeat loop to run
// (nil otherwise). The catalog is for people and tools: a failure is
// logged, never fatal to the service.
func (s *Service) announce(ctx context.Context, instance string) func(ctx context.Context) {
	ms, ok := s.cfg.broker.(broker.ManifestStore)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	m, err := s.Manifest()
	if err == nil {
		var data []byte
		if data, err = json.Marshal(m); err == nil {
			err = ms.PutManifest(ctx, s.name, data)
		}
	}
	if err != nil {
		s.log.Warn("catalog: publish the manifest", "err", err)
	}
	host, _ := os.Hostname()
	info, _ := json.Marshal(catalog.Instance{ID: instance, Started: time.Now().UTC(), Host: host})
	beat := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
		defer cancel()
		return ms.Heartbeat(ctx, s.name, instance, info)
	}
	if err := beat(ctx); err != nil {
		s.log.Warn("catalog: heartbeat", "err", err)
	}
	return func(ctx context.Context) {
		every := max(ms.InstanceTTL()/3, 100*time.Millisecond)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := beat(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("catalog: heartbeat", "err", err)
			}
		}
	}
}

// withdraw removes this instance from the catalog at a clean stop; the
// manifest stays, so the service shows as stale until an instance starts
// again or an operator retires it (`herald catalog forget`).
func (s *Service) withdraw(instance string) {
	ms, ok := s.cfg.broker.(broker.ManifestStore)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	if err := ms.Withdraw(ctx, s.name, instance); err != nil {
		s.log.Debug("catalog: withdraw", "err", err)
	}
}
