package catalog

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/invopop/jsonschema"
)

// SchemaOf returns the JSON Schema (2020-12) of values of type t as
// encoding/json writes them: properties named by their json tags, a field
// required unless it is tagged omitempty or omitzero, nested named types in
// $defs, and additional properties allowed (decoders ignore unknown fields,
// so adding an optional field is not a breaking change). A type JSON cannot
// carry (a channel, a function, a complex number) is an error naming it.
func SchemaOf(t reflect.Type) (_ json.RawMessage, err error) {
	if t == nil {
		return nil, fmt.Errorf("catalog: schema of a nil type")
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("catalog: JSON Schema of %v: %v", t, p)
		}
	}()
	r := &jsonschema.Reflector{
		Anonymous:                 true, // no $id made of the Go package path
		AllowAdditionalProperties: true,
		ExpandedStruct:            true,
		Mapper:                    marshalerSchema,
	}
	s := r.ReflectFromType(t)
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("catalog: JSON Schema of %v: %w", t, err)
	}
	return data, nil
}

var (
	jsonMarshaler  = reflect.TypeFor[json.Marshaler]()
	textMarshaler  = reflect.TypeFor[encoding.TextMarshaler]()
	timeType       = reflect.TypeFor[time.Time]()
	schemaProvider = reflect.TypeFor[interface{ JSONSchema() *jsonschema.Schema }]()
)

// marshalerSchema gives the schema of a type that encodes itself, as
// encoding/json writes it: any JSON value for a json.Marshaler (it writes
// what it likes), a string for an encoding.TextMarshaler (a ULID, a UUID,
// a decimal) — rather than the schema of its Go fields, which JSON never
// sees. time.Time (a date-time string) and types with their own
// JSONSchema method are left to the reflector. nil: not such a type.
func marshalerSchema(t reflect.Type) *jsonschema.Schema {
	if t == timeType || t.Implements(schemaProvider) || reflect.PointerTo(t).Implements(schemaProvider) {
		return nil
	}
	switch {
	case t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler):
		// Not the empty schema, which the library writes as true.
		return &jsonschema.Schema{Comments: "any JSON value: " + t.String() + " encodes itself (MarshalJSON)"}
	case t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler):
		return &jsonschema.Schema{Type: "string"}
	}
	return nil
}

// ChangeKind classifies one difference between two schemas of a contract.
type ChangeKind string

// The kinds of change. Removed, Retyped and RequiredAdded break readers
// of the older schema (or events written with it); Added and Relaxed do not.
const (
	Removed       ChangeKind = "removed"
	Retyped       ChangeKind = "retyped"
	RequiredAdded ChangeKind = "required-added"
	Added         ChangeKind = "added"
	Relaxed       ChangeKind = "made-optional"
)

// Breaking reports whether the change breaks compatibility.
func (k ChangeKind) Breaking() bool {
	return k == Removed || k == Retyped || k == RequiredAdded
}

// Change is one difference between two schemas, at a field path such as
// "items[].price_cents" ("" is the payload itself).
type Change struct {
	Kind ChangeKind
	Path string
	// Old and New are the types before and after (for Retyped).
	Old, New string
}

// String describes the change, naming the field.
func (c Change) String() string {
	field := fmt.Sprintf("field %q", c.Path)
	if c.Path == "" {
		field = "the payload"
	}
	switch c.Kind {
	case Removed:
		return field + " was removed"
	case Retyped:
		return fmt.Sprintf("%s changed type from %s to %s", field, c.Old, c.New)
	case RequiredAdded:
		return field + " is a new required field"
	case Added:
		return field + " was added (optional)"
	case Relaxed:
		return field + " is no longer required"
	}
	return field + " changed"
}

// DiffSchemas compares the schema a contract had (old) with the one it has
// (next) and returns the changes, sorted by path.
func DiffSchemas(old, next json.RawMessage) ([]Change, error) {
	o, err := parseSchema(old)
	if err != nil {
		return nil, fmt.Errorf("catalog: old schema: %w", err)
	}
	n, err := parseSchema(next)
	if err != nil {
		return nil, fmt.Errorf("catalog: new schema: %w", err)
	}
	var d differ
	d.walk("", o.root, n.root, o, n, 0)
	sort.SliceStable(d.changes, func(i, j int) bool { return d.changes[i].Path < d.changes[j].Path })
	return d.changes, nil
}

// doc is a parsed schema with its definitions, for following $ref.
type doc struct {
	root map[string]any
	defs map[string]any
}

func parseSchema(raw json.RawMessage) (*doc, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("empty schema")
	}
	var root map[string]any
	if err := json.Unmarshal(raw, &root); err != nil {
		return nil, err
	}
	d := &doc{root: root, defs: map[string]any{}}
	for _, key := range []string{"$defs", "definitions"} {
		if m, ok := root[key].(map[string]any); ok {
			for k, v := range m {
				d.defs[k] = v
			}
		}
	}
	return d, nil
}

// resolve follows $ref into the definitions and unwraps the
// nullable form (oneOf: [T, null]) the reflector writes.
func (d *doc) resolve(s map[string]any) (map[string]any, bool) {
	nullable := false
	for range 32 {
		if ref, ok := s["$ref"].(string); ok {
			name := ref[strings.LastIndex(ref, "/")+1:]
			def, ok := d.defs[name].(map[string]any)
			if !ok {
				return s, nullable
			}
			s = def
			continue
		}
		if alts, ok := s["oneOf"].([]any); ok && len(alts) == 2 {
			var other map[string]any
			for _, a := range alts {
				m, _ := a.(map[string]any)
				if m["type"] == "null" {
					nullable = true
				} else {
					other = m
				}
			}
			if nullable && other != nil {
				s = other
				continue
			}
		}
		break
	}
	return s, nullable
}

// typeName is a short description of a schema's type.
func typeName(s map[string]any) string {
	switch t := s["type"].(type) {
	case string:
		if f, ok := s["format"].(string); ok && t == "string" {
			return "string(" + f + ")"
		}
		return t
	case []any:
		var parts []string
		for _, p := range t {
			parts = append(parts, fmt.Sprint(p))
		}
		slices.Sort(parts)
		return strings.Join(parts, "|")
	}
	if _, ok := s["oneOf"]; ok {
		return "oneOf"
	}
	if _, ok := s["anyOf"]; ok {
		return "anyOf"
	}
	return "any"
}

type differ struct{ changes []Change }

func (d *differ) add(c Change) { d.changes = append(d.changes, c) }

func (d *differ) walk(path string, os, ns map[string]any, od, nd *doc, depth int) {
	if depth > 32 { // recursive types: deep enough
		return
	}
	os, _ = od.resolve(os)
	ns, _ = nd.resolve(ns)
	ot, nt := typeName(os), typeName(ns)
	if ot != nt && ot != "any" {
		d.add(Change{Kind: Retyped, Path: path, Old: ot, New: nt})
		return
	}
	switch ot {
	case "object":
		d.object(path, os, ns, od, nd, depth)
	case "array":
		oi, _ := os["items"].(map[string]any)
		ni, _ := ns["items"].(map[string]any)
		if oi != nil && ni != nil {
			d.walk(path+"[]", oi, ni, od, nd, depth+1)
		}
	}
}

func (d *differ) object(path string, os, ns map[string]any, od, nd *doc, depth int) {
	props := func(s map[string]any) map[string]any {
		p, _ := s["properties"].(map[string]any)
		return p
	}
	required := func(s map[string]any) map[string]bool {
		out := map[string]bool{}
		r, _ := s["required"].([]any)
		for _, v := range r {
			if name, ok := v.(string); ok {
				out[name] = true
			}
		}
		return out
	}
	op, np := props(os), props(ns)
	or, nr := required(os), required(ns)
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	for name, ov := range op {
		nv, ok := np[name]
		if !ok {
			d.add(Change{Kind: Removed, Path: join(name)})
			continue
		}
		if nr[name] && !or[name] {
			d.add(Change{Kind: RequiredAdded, Path: join(name)})
		} else if or[name] && !nr[name] {
			d.add(Change{Kind: Relaxed, Path: join(name)})
		}
		om, _ := ov.(map[string]any)
		nm, _ := nv.(map[string]any)
		if om != nil && nm != nil {
			d.walk(join(name), om, nm, od, nd, depth+1)
		}
	}
	for name := range np {
		if _, ok := op[name]; ok {
			continue
		}
		if nr[name] {
			d.add(Change{Kind: RequiredAdded, Path: join(name)})
		} else {
			d.add(Change{Kind: Added, Path: join(name)})
		}
	}
	// Maps: compare their values.
	oa, _ := os["additionalProperties"].(map[string]any)
	na, _ := ns["additionalProperties"].(map[string]any)
	if oa != nil && na != nil {
		d.walk(path+"{}", oa, na, od, nd, depth+1)
	}
}
