package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// LockFormat is the version of the lock file format.
const LockFormat = 1

// ErrBreakingChange is wrapped by CheckLock's error when a contract changed
// incompatibly without a version bump.
var ErrBreakingChange = errors.New("catalog: breaking contract change")

// Lock is the committed record of the public contracts (integration and
// notification events) and their schemas, one entry per name and version.
type Lock struct {
	Format    int        `json:"herald_lock"`
	Contracts []Contract `json:"contracts"`
}

// NewLock returns the lock of contracts: the integration and notification
// ones (domain events are private to their service), sorted, without
// duplicates. Two different schemas for one name and version (two services
// built from different code) are an error naming the contract.
func NewLock(contracts []Contract) (Lock, error) {
	l := Lock{Format: LockFormat}
	for _, c := range contracts {
		if c.Kind == KindDomain {
			continue
		}
		if i := l.index(c.Name, c.Version); i >= 0 {
			prev := l.Contracts[i]
			if prev.Kind != c.Kind {
				return Lock{}, fmt.Errorf("catalog: %s is both %s and %s", Ref{c.Name, c.Version}, prev.Kind, c.Kind)
			}
			if !sameJSON(prev.Schema, c.Schema) {
				return Lock{}, fmt.Errorf("catalog: %s has two different schemas (%s and %s): services built from different contract code",
					Ref{c.Name, c.Version}, prev.GoType, c.GoType)
			}
			continue
		}
		c.GoType = "" // renaming a Go type does not change the contract
		l.Contracts = append(l.Contracts, c)
	}
	slices.SortFunc(l.Contracts, func(a, b Contract) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
	return l, nil
}

// ContractsOf returns every contract of the manifests.
func ContractsOf(ms []Manifest) []Contract {
	var out []Contract
	for _, m := range ms {
		out = append(out, m.Contracts...)
	}
	return out
}

func (l *Lock) index(name string, version int) int {
	for i, c := range l.Contracts {
		if c.Name == name && c.Version == version {
			return i
		}
	}
	return -1
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}

// ReadLock reads a lock file.
func ReadLock(path string) (Lock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Lock{}, fmt.Errorf("catalog: lock file: %w", err)
	}
	var l Lock
	if err := json.Unmarshal(data, &l); err != nil {
		return Lock{}, fmt.Errorf("catalog: lock file %s: %w", path, err)
	}
	if l.Format != LockFormat {
		return Lock{}, fmt.Errorf("catalog: lock file %s: format %d, want %d (\"herald_lock\")", path, l.Format, LockFormat)
	}
	for _, c := range l.Contracts {
		if c.Name == "" || c.Version < 1 || len(c.Schema) == 0 {
			return Lock{}, fmt.Errorf("catalog: lock file %s: entry %q v%d needs a name, a version >= 1 and a schema", path, c.Name, c.Version)
		}
	}
	return l, nil
}

// Marshal returns the lock as indented JSON, stable for diffs.
func (l Lock) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(l); err != nil {
		return nil, err
	}
	// Indent the embedded schemas too.
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// WriteLock writes l to path.
func WriteLock(path string, l Lock) error {
	data, err := l.Marshal()
	if err != nil {
		return fmt.Errorf("catalog: lock: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("catalog: lock file: %w", err)
	}
	return nil
}

// Finding is one difference between the code's contracts and the lock.
type Finding struct {
	Contract Ref
	// Change is the schema change (zero for a contract or version that is
	// new or gone).
	Change Change
	// Breaking findings fail the check.
	Breaking bool
	Message  string
}

// String is the finding's message.
func (f Finding) String() string { return f.Message }

// LockReport is the outcome of CheckLock.
type LockReport struct {
	Findings []Finding
}

// Breaking returns the findings that fail the check.
func (r LockReport) Breaking() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Breaking {
			out = append(out, f)
		}
	}
	return out
}

// Err returns nil when nothing breaks, else an error wrapping
// ErrBreakingChange that names every broken contract and field.
func (r LockReport) Err() error {
	b := r.Breaking()
	if len(b) == 0 {
		return nil
	}
	msgs := make([]string, len(b))
	for i, f := range b {
		msgs[i] = "  " + f.Message
	}
	return fmt.Errorf("%w: %d incompatible change(s) without a version bump:\n%s", ErrBreakingChange, len(b), strings.Join(msgs, "\n"))
}

// CheckLock compares the contracts in the code with the lock. A breaking
// schema change of a name and version the lock has (a field removed or
// retyped, a required field added, a field made required) is Breaking: bump
// the contract's version (herald.Version) and keep the old one for consumers
// (herald.Upcast), or undo the change. Compatible changes, new contracts or
// versions and contracts gone from the code are reported, not breaking;
// rewrite the lock (WriteLock / `herald schema lock`) to record them.
func CheckLock(l Lock, code []Contract) (LockReport, error) {
	now, err := NewLock(code)
	if err != nil {
		return LockReport{}, err
	}
	var r LockReport
	add := func(ref Ref, ch Change, breaking bool, msg string) {
		r.Findings = append(r.Findings, Finding{Contract: ref, Change: ch, Breaking: breaking, Message: msg})
	}
	for _, c := range now.Contracts {
		ref := Ref{c.Name, c.Version}
		i := l.index(c.Name, c.Version)
		if i < 0 {
			if older := l.versions(c.Name); len(older) > 0 {
				add(ref, Change{}, false, fmt.Sprintf("%s is a new version (the lock has %v): lock it", ref, older))
			} else {
				add(ref, Change{}, false, fmt.Sprintf("%s is a new contract: lock it", ref))
			}
			continue
		}
		locked := l.Contracts[i]
		if locked.Kind != c.Kind {
			add(ref, Change{}, true, fmt.Sprintf("%s: kind changed from %s to %s", ref, locked.Kind, c.Kind))
			continue
		}
		changes, err := DiffSchemas(locked.Schema, c.Schema)
		if err != nil {
			return LockReport{}, fmt.Errorf("catalog: %s: %w", ref, err)
		}
		for _, ch := range changes {
			if ch.Kind.Breaking() {
				add(ref, ch, true, fmt.Sprintf("%s: %s — bump the version (herald.Version(%d)) or undo the change", ref, ch, c.Version+1))
			} else {
				add(ref, ch, false, fmt.Sprintf("%s: %s (compatible): lock it", ref, ch))
			}
		}
	}
	for _, c := range l.Contracts {
		if now.index(c.Name, c.Version) < 0 {
			add(Ref{c.Name, c.Version}, Change{}, false, fmt.Sprintf("%s is in the lock but no longer in the code", Ref{c.Name, c.Version}))
		}
	}
	return r, nil
}

func (l *Lock) versions(name string) []int {
	var out []int
	for _, c := range l.Contracts {
		if c.Name == name {
			out = append(out, c.Version)
		}
	}
	return out
}
