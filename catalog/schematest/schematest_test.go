package schematest_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/catalog/schematest"
)

// recorder is a testing.TB that keeps what a check reports instead of
// failing the real test; Fatalf stops the check like the real one.
type recorder struct {
	testing.TB
	errors []string
}

type fatal string

func (r *recorder) Helper()             {}
func (r *recorder) Logf(string, ...any) {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatalf(format string, a ...any) { panic(fatal(fmt.Sprintf(format, a...))) }

func (r *recorder) run(fn func(t testing.TB)) (failed string) {
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(fatal)
			if !ok {
				panic(p)
			}
			failed = string(f)
		}
	}()
	fn(r)
	return strings.Join(r.errors, "\n")
}

type (
	v1 struct {
		ID    string `json:"id"`
		Total int    `json:"total"`
	}
	v1Retyped struct {
		ID    string  `json:"id"`
		Total float64 `json:"total"`
	}
)

func TestCheckContracts(t *testing.T) {
	lock := filepath.Join(t.TempDir(), "herald.lock.json")
	original := herald.Integration[v1]("acme.thing.done")

	if got := (&recorder{TB: t}).run(func(tb testing.TB) { schematest.CheckContracts(tb, lock, original) }); !strings.Contains(got, "HERALD_UPDATE_LOCK=1") {
		t.Fatalf("without a lock file: %q, want a hint to write it", got)
	}
	t.Setenv(schematest.EnvUpdate, "1")
	schematest.CheckContracts(t, lock, original)
	t.Setenv(schematest.EnvUpdate, "")

	if got := (&recorder{TB: t}).run(func(tb testing.TB) { schematest.CheckContracts(tb, lock, original) }); got != "" {
		t.Fatalf("the locked contract fails: %s", got)
	}
	retyped := herald.Integration[v1Retyped]("acme.thing.done")
	got := (&recorder{TB: t}).run(func(tb testing.TB) { schematest.CheckContracts(tb, lock, retyped) })
	if !strings.Contains(got, `acme.thing.done v1: field "total" changed type from integer to number`) {
		t.Fatalf("a retyped field: %q", got)
	}
	bumped := herald.Integration[v1Retyped]("acme.thing.done", herald.Version(2))
	if got := (&recorder{TB: t}).run(func(tb testing.TB) { schematest.CheckContracts(tb, lock, original, bumped) }); got != "" {
		t.Fatalf("the change under a new version fails: %s", got)
	}
}
