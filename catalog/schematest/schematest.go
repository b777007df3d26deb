// Package schematest checks a program's event contracts against a lock file
// committed next to the code, from the program's own tests — the way to run
// `herald schema check` in a Go project's CI, where the herald binary cannot
// see the program's types:
//
//	func TestContractsMatchTheLock(t *testing.T) {
//		schematest.CheckContracts(t, "herald.lock.json",
//			contract.OrderConfirmedV1, contract.ShipmentScheduledV1)
//	}
//
// The test fails on a breaking change (a field removed or retyped, a
// required field added) of a contract whose version was not bumped, naming
// the contract and the field. Run the tests once with HERALD_UPDATE_LOCK=1 to
// write the lock file (after bumping a version, or to record compatible
// changes), and commit it.
//
// ValidateManifest checks a manifest against the documented manifest format
// (catalog.ManifestSchema), for services that write their manifest by hand.
package schematest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/catalog"
)

// EnvUpdate, set to 1, makes the checks write the lock file instead.
const EnvUpdate = "HERALD_UPDATE_LOCK"

// CheckContracts checks contracts against the lock file at path.
func CheckContracts(t testing.TB, path string, contracts ...herald.Contract) {
	t.Helper()
	cs, err := herald.DescribeContracts(contracts...)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	check(t, path, cs)
}

// CheckServices checks every contract of services (their manifests)
// against the lock file at path. The services need not be started.
func CheckServices(t testing.TB, path string, services ...*herald.Service) {
	t.Helper()
	var ms []catalog.Manifest
	for _, s := range services {
		m, err := s.Manifest()
		if err != nil {
			t.Fatalf("schematest: %v", err)
		}
		ms = append(ms, m)
	}
	check(t, path, catalog.ContractsOf(ms))
}

func check(t testing.TB, path string, cs []catalog.Contract) {
	t.Helper()
	if os.Getenv(EnvUpdate) == "1" {
		l, err := catalog.NewLock(cs)
		if err == nil {
			err = catalog.WriteLock(path, l)
		}
		if err != nil {
			t.Fatalf("schematest: %v", err)
		}
		t.Logf("schematest: wrote %s (%d contract versions)", path, len(l.Contracts))
		return
	}
	l, err := catalog.ReadLock(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("schematest: no lock file %s: run the tests with %s=1 to write it, and commit it", path, EnvUpdate)
	}
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	r, err := catalog.CheckLock(l, cs)
	if err != nil {
		t.Fatalf("schematest: %v", err)
	}
	for _, f := range r.Findings {
		if !f.Breaking {
			t.Logf("schematest: %s (run with %s=1 to record it)", f.Message, EnvUpdate)
		}
	}
	if err := r.Err(); err != nil {
		t.Errorf("schematest: %s: %v", path, err)
	}
}

// ValidateManifest checks a manifest, as JSON, against the documented
// manifest format (catalog.ManifestSchema) with a JSON Schema validator, and
// against catalog's own checks (Manifest.Validate): how a service in
// another language tests the manifest it publishes.
func ValidateManifest(t testing.TB, data []byte) {
	t.Helper()
	if err := CheckManifest(data); err != nil {
		t.Error(err)
	}
}

// CheckManifest is ValidateManifest returning the error: nil, or what is
// wrong, naming the property.
func CheckManifest(data []byte) error {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(catalog.ManifestSchema))
	if err != nil {
		return fmt.Errorf("schematest: the manifest schema: %w", err)
	}
	if err := c.AddResource(catalog.ManifestSchemaID, doc); err != nil {
		return fmt.Errorf("schematest: the manifest schema: %w", err)
	}
	sch, err := c.Compile(catalog.ManifestSchemaID)
	if err != nil {
		return fmt.Errorf("schematest: the manifest schema: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("schematest: manifest: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("schematest: manifest does not match %s: %w", catalog.ManifestSchemaID, err)
	}
	if _, err := catalog.ReadManifests(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("schematest: %w", err)
	}
	return nil
}
