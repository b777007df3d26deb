package catalog_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/catalog/schematest"
)

// TestManifestSchemaMatchesTheGoTypes walks catalog.Manifest and the types
// it holds, and fails when a JSON field of the Go types is not in
// manifest.schema.json (or has another JSON type there), when the schema
// has a property the Go types do not, or when the schema requires a field
// the Go types may omit: the documented format cannot drift from what herald
// writes and reads.
func TestManifestSchemaMatchesTheGoTypes(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal(catalog.ManifestSchema, &schema); err != nil {
		t.Fatalf("manifest.schema.json: %v", err)
	}
	if id := schema["$id"]; id != catalog.ManifestSchemaID {
		t.Errorf("$id is %v, want catalog.ManifestSchemaID %s", id, catalog.ManifestSchemaID)
	}
	defs, _ := schema["$defs"].(map[string]any)
	resolve := func(s map[string]any) map[string]any {
		if ref, ok := s["$ref"].(string); ok {
			name, _ := strings.CutPrefix(ref, "#/$defs/")
			d, _ := defs[name].(map[string]any)
			return d
		}
		return s
	}
	checked := map[reflect.Type]bool{}
	var walk func(path string, typ reflect.Type, s map[string]any)
	walk = func(path string, typ reflect.Type, s map[string]any) {
		if checked[typ] {
			return
		}
		checked[typ] = true
		props, _ := s["properties"].(map[string]any)
		var required []string
		for _, r := range s["required"].([]any) {
			required = append(required, r.(string))
		}
		goFields := map[string]bool{}
		for f := range typ.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			goFields[name] = true
			where := path + "." + name
			omitted := strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
			if slices.Contains(required, name) && omitted {
				t.Errorf("%s: the schema requires it, the Go type omits it when empty", where)
			}
			p, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s (%s.%s %v) is missing from manifest.schema.json", where, typ.Name(), f.Name, f.Type)
				continue
			}
			checkType(t, where, f.Type, resolve(p), resolve, walk)
		}
		for name := range props {
			if !goFields[name] {
				t.Errorf("%s.%s is in manifest.schema.json but not in the Go type %s", path, name, typ.Name())
			}
		}
	}
	walk("manifest", reflect.TypeFor[catalog.Manifest](), schema)
	for _, typ := range []reflect.Type{reflect.TypeFor[catalog.Contract](), reflect.TypeFor[catalog.Ref](), reflect.TypeFor[catalog.Translation](),
		reflect.TypeFor[catalog.Handler](), reflect.TypeFor[catalog.Subscription](), reflect.TypeFor[catalog.Instance]()} {
		if !checked[typ] {
			t.Errorf("the walk did not reach %s", typ)
		}
	}
}

// checkType compares the JSON type of Go type typ with schema s.
func checkType(t *testing.T, where string, typ reflect.Type, s map[string]any, resolve func(map[string]any) map[string]any,
	walk func(string, reflect.Type, map[string]any)) {
	t.Helper()
	types := map[string]bool{}
	switch v := s["type"].(type) {
	case string:
		types[v] = true
	case []any:
		for _, x := range v {
			types[x.(string)] = true
		}
	}
	want := func(jsonType string) {
		if len(types) > 0 && !types[jsonType] {
			t.Errorf("%s: Go %v is JSON %s; the schema says %v", where, typ, jsonType, s["type"])
		}
		if len(types) == 0 && s["enum"] == nil {
			t.Errorf("%s: the schema gives no type", where)
		}
	}
	switch {
	case typ == reflect.TypeFor[json.RawMessage]():
		// any JSON; the schema says what it holds
	case typ == reflect.TypeFor[time.Time]():
		want("string")
		if s["format"] != "date-time" {
			t.Errorf("%s: a time, want format date-time", where)
		}
	case typ.Kind() == reflect.String:
		want("string")
	case typ.Kind() == reflect.Int:
		want("integer")
	case typ.Kind() == reflect.Bool:
		want("boolean")
	case typ.Kind() == reflect.Slice:
		want("array")
		items, _ := s["items"].(map[string]any)
		if items == nil {
			t.Errorf("%s: an array without items", where)
			return
		}
		checkType(t, where+"[]", typ.Elem(), resolve(items), resolve, walk)
	case typ.Kind() == reflect.Struct:
		want("object")
		walk(where, typ, s)
	default:
		t.Errorf("%s: Go %v: no rule for this type in the test", where, typ)
	}
}

// TestManifestSchemaValidatesManifests checks real manifests — those of
// services built with herald, with every feature a manifest describes, and
// one as `herald catalog --format json` writes it — against the schema, and
// that the schema refuses what catalog refuses.
func TestManifestSchemaValidatesManifests(t *testing.T) {
	for _, m := range billingSystem(t) {
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		schematest.ValidateManifest(t, data)
		m.Instances = []catalog.Instance{{ID: "i-1", Started: time.Now().UTC(), LastSeen: time.Now().UTC(), Host: "h"}}
		m.Stale = false
		data, _ = json.Marshal(m)
		schematest.ValidateManifest(t, data)
	}
	for _, tc := range []struct {
		name, manifest, want string
	}{
		{"no service", `{"contracts": [], "updated": "2026-01-02T03:04:05Z"}`, "service"},
		{"empty service", `{"service": "", "contracts": [], "updated": "2026-01-02T03:04:05Z"}`, "service"},
		{"no updated", `{"service": "a", "contracts": []}`, "updated"},
		{"bad time", `{"service": "a", "contracts": [], "updated": "yesterday"}`, "updated"},
		{"unknown kind", `{"service": "a", "contracts": [{"name": "x", "version": 1, "kind": "command"}], "updated": "2026-01-02T03:04:05Z"}`, "kind"},
		{"version 0", `{"service": "a", "contracts": [{"name": "x", "version": 0, "kind": "domain"}], "updated": "2026-01-02T03:04:05Z"}`, "version"},
		{"subscription without accepts", `{"service": "a", "contracts": [{"name": "x", "version": 1, "kind": "integration"}],
			"subscriptions": [{"name": "s", "event": "x", "kind": "integration", "version": 1}], "updated": "2026-01-02T03:04:05Z"}`, "accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := schematest.CheckManifest([]byte(tc.manifest))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckManifest = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
