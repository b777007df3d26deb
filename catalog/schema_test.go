package catalog

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// selfEncoded writes itself as a JSON number, whatever its fields.
type selfEncoded struct{ cents int64 }

func (s selfEncoded) MarshalJSON() ([]byte, error) { return json.Marshal(s.cents) }

// textual writes itself as a string (as a UUID or a decimal type does).
type textual struct{ b [4]byte }

func (t textual) MarshalText() ([]byte, error) { return []byte("abcd"), nil }

type withMarshalers struct {
	ID     ulid.ULID   `json:"id"`
	Ref    *textual    `json:"ref,omitempty"`
	Amount selfEncoded `json:"amount"`
	At     time.Time   `json:"at"`
	Name   string      `json:"name"`
}

// TestSchemaOfTypesThatEncodeThemselves: a field whose type encodes itself
// (encoding.TextMarshaler, json.Marshaler) has the schema of what
// encoding/json writes — a string, any value — not that of its Go fields;
// time.Time stays a date-time string.
func TestSchemaOfTypesThatEncodeThemselves(t *testing.T) {
	raw, err := SchemaOf(reflect.TypeFor[withMarshalers]())
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		want  map[string]any
	}{
		{"id", map[string]any{"type": "string"}},
		{"ref", map[string]any{"type": "string"}},
		{"amount", map[string]any{"$comment": "any JSON value: catalog.selfEncoded encodes itself (MarshalJSON)"}},
		{"at", map[string]any{"type": "string", "format": "date-time"}},
		{"name", map[string]any{"type": "string"}},
	} {
		if got := s.Properties[tc.field]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: schema %v, want %v (whole: %s)", tc.field, got, tc.want, raw)
		}
	}
}
