package herald

import (
	"fmt"
	"sort"
	"sync"
)

// Registry holds a set of contracts and refuses the ones that would make
// event types ambiguous: a malformed name, a second contract with the same
// name and version, or one name used for two kinds. Registering the same
// contract value twice is fine. A Service has one; it is exported so tools
// and tests can check a set of contracts on their own.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]map[int]Contract
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byName: map[string]map[int]Contract{}}
}

// Register adds contracts, stopping at the first one refused; the error
// names it.
func (r *Registry) Register(cs ...Contract) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		if err := r.register(c); err != nil {
			return err
		}
	}
	return nil
}

func (r *Registry) register(c Contract) error {
	if c == nil {
		return fmt.Errorf("%w: nil contract", ErrInvalidContract)
	}
	if err := validate(c); err != nil {
		return err
	}
	versions := r.byName[c.Name()]
	for _, other := range versions {
		if other.Kind() != c.Kind() {
			return fmt.Errorf("%w: %s: %q is already registered as a %s contract",
				ErrKindMismatch, c.base(), c.Name(), other.Kind())
		}
		break
	}
	if other, ok := versions[c.Version()]; ok {
		if other == c {
			return nil
		}
		return fmt.Errorf("%w: %s is already registered (another contract value with the same name and version)",
			ErrDuplicateContract, c.base())
	}
	if versions == nil {
		versions = map[int]Contract{}
		r.byName[c.Name()] = versions
	}
	versions[c.Version()] = c
	return nil
}

// Lookup returns the contract registered under name and version.
func (r *Registry) Lookup(name string, version int) (Contract, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.byName[name][version]
	return c, ok
}

// knows reports whether some contract is registered under name.
func (r *Registry) knows(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byName[name]) > 0
}

// has reports whether exactly c is registered.
func (r *Registry) has(c Contract) bool {
	got, ok := r.Lookup(c.Name(), c.Version())
	return ok && got == c
}

// Contracts returns every registered contract, sorted by name and version.
func (r *Registry) Contracts() []Contract {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Contract
	for _, vs := range r.byName {
		for _, c := range vs {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name() != out[j].Name() {
			return out[i].Name() < out[j].Name()
		}
		return out[i].Version() < out[j].Version()
	})
	return out
}
