package catalog_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/catalog"
)

// Shipment, and the ways a later commit might change it.
type (
	Shipment struct {
		ID      string   `json:"id"`
		Weight  int      `json:"weight_g"`
		Parcels []Parcel `json:"parcels"`
		Note    string   `json:"note,omitempty"`
	}
	Parcel struct {
		Barcode string `json:"barcode"`
		Width   int    `json:"width_mm"`
	}
	ShipmentFieldRemoved struct {
		ID      string   `json:"id"`
		Parcels []Parcel `json:"parcels"`
		Note    string   `json:"note,omitempty"`
	}
	ShipmentRetyped struct {
		ID      string   `json:"id"`
		Weight  string   `json:"weight_g"`
		Parcels []Parcel `json:"parcels"`
		Note    string   `json:"note,omitempty"`
	}
	ShipmentRequiredAdded struct {
		ID      string   `json:"id"`
		Weight  int      `json:"weight_g"`
		Parcels []Parcel `json:"parcels"`
		Note    string   `json:"note,omitempty"`
		Carrier string   `json:"carrier"`
	}
	ShipmentNestedRetyped struct {
		ID      string    `json:"id"`
		Weight  int       `json:"weight_g"`
		Parcels []Parcel2 `json:"parcels"`
		Note    string    `json:"note,omitempty"`
	}
	Parcel2 struct {
		Barcode int `json:"barcode"`
		Width   int `json:"width_mm"`
	}
	ShipmentOptionalAdded struct {
		ID      string   `json:"id"`
		Weight  int      `json:"weight_g"`
		Parcels []Parcel `json:"parcels"`
		Note    string   `json:"note,omitempty"`
		Insured bool     `json:"insured,omitempty"`
	}
	ShipmentNoteRequired struct {
		ID      string   `json:"id"`
		Weight  int      `json:"weight_g"`
		Parcels []Parcel `json:"parcels"`
		Note    string   `json:"note"`
	}
)

func describe(t *testing.T, cs ...herald.Contract) []catalog.Contract {
	t.Helper()
	out, err := herald.DescribeContracts(cs...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const shipped = "acme.shipment.shipped"

func TestCheckLock(t *testing.T) {
	lock, err := catalog.NewLock(describe(t, herald.Integration[Shipment](shipped)))
	if err != nil {
		t.Fatal(err)
	}
	// The lock goes through a file, as in a repository.
	path := filepath.Join(t.TempDir(), "herald.lock.json")
	if err := catalog.WriteLock(path, lock); err != nil {
		t.Fatal(err)
	}
	if lock, err = catalog.ReadLock(path); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		v1, v2   herald.Contract // the contract at version 1, and the same change at version 2
		breaking string          // what the error must name ("" = passes)
	}{
		{"unchanged", herald.Integration[Shipment](shipped), nil, ""},
		{"field removed", herald.Integration[ShipmentFieldRemoved](shipped), herald.Integration[ShipmentFieldRemoved](shipped, herald.Version(2)),
			`field "weight_g" was removed`},
		{"field retyped", herald.Integration[ShipmentRetyped](shipped), herald.Integration[ShipmentRetyped](shipped, herald.Version(2)),
			`field "weight_g" changed type from integer to string`},
		{"required field added", herald.Integration[ShipmentRequiredAdded](shipped), herald.Integration[ShipmentRequiredAdded](shipped, herald.Version(2)),
			`field "carrier" is a new required field`},
		{"nested field retyped", herald.Integration[ShipmentNestedRetyped](shipped), herald.Integration[ShipmentNestedRetyped](shipped, herald.Version(2)),
			`field "parcels[].barcode" changed type from string to integer`},
		{"optional field made required", herald.Integration[ShipmentNoteRequired](shipped), nil, `field "note" is a new required field`},
		{"optional field added", herald.Integration[ShipmentOptionalAdded](shipped), nil, ""},
		{"kind changed", herald.Notification[Shipment](shipped), nil, "kind changed from integration to notification"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := catalog.CheckLock(lock, describe(t, tc.v1))
			if err != nil {
				t.Fatal(err)
			}
			err = r.Err()
			if tc.breaking == "" {
				if err != nil {
					t.Fatalf("check failed: %v", err)
				}
				return
			}
			if !errors.Is(err, catalog.ErrBreakingChange) || !strings.Contains(err.Error(), tc.breaking) {
				t.Fatalf("check: %v\nwant ErrBreakingChange naming %q", err, tc.breaking)
			}
			if tc.v2 == nil {
				return
			}
			// The same change with the version bumped passes: v2 is new.
			r, err = catalog.CheckLock(lock, describe(t, herald.Integration[Shipment](shipped), tc.v2))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Err(); err != nil {
				t.Fatalf("with a bumped version: %v", err)
			}
			if len(r.Findings) != 1 || !strings.Contains(r.Findings[0].Message, "new version") {
				t.Fatalf("with a bumped version, findings %v, want one about the new version", r.Findings)
			}
		})
	}
}

func TestLockRefusesTwoSchemasForOneVersion(t *testing.T) {
	_, err := catalog.NewLock(describe(t, herald.Integration[Shipment](shipped), herald.Integration[ShipmentRetyped](shipped)))
	if err == nil || !strings.Contains(err.Error(), "two different schemas") {
		t.Fatalf("NewLock: %v", err)
	}
}

func TestReadLockErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := catalog.ReadLock(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing lock file is no error")
	}
}

func TestDiffSchemas(t *testing.T) {
	type (
		A struct {
			Tags  map[string]int `json:"tags"`
			Extra any            `json:"extra"`
			Ptr   *int           `json:"ptr,omitempty"`
			Must  string         `json:"must"`
		}
		B struct {
			Tags  map[string]string `json:"tags"`
			Extra []int             `json:"extra"`
			Ptr   int               `json:"ptr,omitempty"`
			Must  string            `json:"must,omitempty"`
		}
	)
	schema := func(c herald.Contract) []catalog.Contract { return describe(t, c) }
	a, b := schema(herald.Integration[A]("x.a"))[0].Schema, schema(herald.Integration[B]("x.a"))[0].Schema
	changes, err := catalog.DiffSchemas(a, b)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.String())
	}
	want := []string{
		`field "must" is no longer required`, // compatible
		`field "tags{}" changed type from integer to string`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := catalog.DiffSchemas(a, []byte("{not json")); err == nil {
		t.Error("a malformed schema is no error")
	}
}
