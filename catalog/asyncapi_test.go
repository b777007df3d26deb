package catalog_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/heraldhq/herald/catalog"
	"github.com/heraldhq/herald/internal/asyncapitest"
)

// TestAsyncAPIValidatedByOfficialParser checks the AsyncAPI 3.0 export of a
// system with versioned contracts, nested and shared types, maps, times,
// notifications and upcasters against @asyncapi/parser — and that the same
// validator refuses a broken document, so it can fail.
func TestAsyncAPIValidatedByOfficialParser(t *testing.T) {
	g, err := catalog.Build(billingSystem(t))
	if err != nil {
		t.Fatal(err)
	}
	var doc bytes.Buffer
	if err := g.WriteAsyncAPI(&doc, catalog.AsyncAPIOptions{Title: "billing", Servers: []string{"nats://127.0.0.1:4222"}}); err != nil {
		t.Fatal(err)
	}
	// Break the document in ways the parser must catch.
	docs := [][]byte{doc.Bytes()}
	broken := []string{"operation on a missing channel", "no info", "message payload of a wrong type"}
	for _, name := range broken {
		var d map[string]any
		if err := json.Unmarshal(doc.Bytes(), &d); err != nil {
			t.Fatal(err)
		}
		switch name {
		case "operation on a missing channel":
			for _, op := range d["operations"].(map[string]any) {
				op.(map[string]any)["channel"] = map[string]any{"$ref": "#/channels/nowhere"}
				break
			}
		case "no info":
			delete(d, "info")
		case "message payload of a wrong type":
			for _, m := range d["components"].(map[string]any)["messages"].(map[string]any) {
				m.(map[string]any)["payload"] = map[string]any{"type": "no-such-type"}
				break
			}
		}
		b, _ := json.Marshal(d)
		docs = append(docs, b)
	}
	out, valid := asyncapitest.Validate(t, docs...)
	if !valid[0] {
		t.Fatalf("the official AsyncAPI parser refused herald's export:\n%s\ndocument:\n%s", out, doc.String())
	}
	t.Logf("parser:\n%s", strings.TrimSpace(out))
	for i, name := range broken {
		if valid[i+1] {
			t.Errorf("%s: the validator accepted a broken document", name)
		}
	}
}
