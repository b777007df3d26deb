package herald

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/envelope"
)

// Events from producers that are not herald services — a service in
// another language, with nothing but a CloudEvents SDK — are not trusted
// to carry what their contract says: before a handler sees one, its data
// is checked against the JSON Schema the catalog publishes for the
// contract (catalog.SchemaOf). herald's own events skip the check: their
// producer encoded a value of the contract's Go type. See
// docs/other-languages.md.

// schemaCache holds the compiled JSON Schemas of a service's contracts, each
// compiled once, at the first foreign event of its type and version.
type schemaCache struct {
	mu      sync.Mutex
	schemas map[upcastKey]*compiledSchema
}

// compiledSchema is one contract's schema, compiled once.
type compiledSchema struct {
	once   sync.Once
	schema *jsonschema.Schema
	err    error
}

// get returns c's compiled schema; failed, called once, is told why it
// does not compile.
func (sc *schemaCache) get(c Contract, failed func(error)) (*jsonschema.Schema, error) {
	k := upcastKey{c.Name(), c.Version()}
	sc.mu.Lock()
	if sc.schemas == nil {
		sc.schemas = map[upcastKey]*compiledSchema{}
	}
	cs, ok := sc.schemas[k]
	if !ok {
		cs = &compiledSchema{}
		sc.schemas[k] = cs
	}
	sc.mu.Unlock()
	cs.once.Do(func() {
		if cs.schema, cs.err = compileSchema(c); cs.err != nil {
			failed(cs.err)
		}
	})
	return cs.schema, cs.err
}

// compileSchema compiles the JSON Schema of c's payload.
func compileSchema(c Contract) (*jsonschema.Schema, error) {
	raw, err := catalog.SchemaOf(c.PayloadType())
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("mem://herald/%s/v%d.json", c.Name(), c.Version())
	comp := jsonschema.NewCompiler()
	if err := comp.AddResource(url, doc); err != nil {
		return nil, err
	}
	return comp.Compile(url)
}

// checkForeign checks the data of e, an event from a producer that is not
// a herald service, against the JSON Schema of its contract. An event of
// a version the service does not know, or of a contract whose codec is not
// JSON, passes: the subscription's decoding judges it.
func (s *Service) checkForeign(e *envelope.Envelope) error {
	c, ok := s.reg.Lookup(e.Type, e.Version)
	if !ok || c.base().codec.ContentType() != envelope.JSON.ContentType() {
		return nil
	}
	schema, err := s.schemas.get(c, func(err error) {
		// herald's fault, not the producer's: the event goes on unchecked
		// (decoding still judges it), rather than every foreign event of
		// the contract becoming a dead letter that cannot be replayed.
		s.log.Error("herald: the contract's JSON Schema does not compile; its foreign events are not checked",
			"type", c.Name(), "version", c.Version(), "err", err)
	})
	if err != nil {
		return nil
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Data))
	if err != nil {
		return fmt.Errorf("data of %s v%d from %s is not JSON: %w", e.Type, e.Version, e.Source, err)
	}
	if err := schema.Validate(v); err != nil {
		return fmt.Errorf("data of %s v%d from %s does not match the contract's JSON Schema: %s", e.Type, e.Version, e.Source, schemaErrors(err))
	}
	return nil
}

// maxSchemaErrors is how many mismatches a dead letter's reason lists.
const maxSchemaErrors = 5

// schemaErrors lists the leaves of a validation error, each naming the
// field ("at '/price_cents': got string, want integer").
func schemaErrors(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var out []string
	n := 0
	var walk func(v *jsonschema.ValidationError)
	walk = func(v *jsonschema.ValidationError) {
		if len(v.Causes) == 0 {
			if n++; n <= maxSchemaErrors {
				out = append(out, v.Error())
			}
			return
		}
		for _, c := range v.Causes {
			walk(c)
		}
	}
	walk(ve)
	if n > maxSchemaErrors {
		out = append(out, fmt.Sprintf("and %d more", n-maxSchemaErrors))
	}
	return strings.Join(out, "; ")
}
