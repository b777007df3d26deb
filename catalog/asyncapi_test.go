package catalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/catalog"
)

// EnvRequireNode, set to 1 (CI does), makes the AsyncAPI validation fail
// instead of skipping when node or npm is missing.
const EnvRequireNode = "HERALD_TEST_REQUIRE_NODE"

var validatorOnce struct {
	sync.Once
	dir string
	err error
}

// asyncAPIValidator returns the directory of the validator script with its
// node_modules installed (npm ci, once; node_modules is kept between runs
// and ignored by git). It skips the test when node or npm is missing,
// unless HERALD_TEST_REQUIRE_NODE=1.
func asyncAPIValidator(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(EnvRequireNode) == "1" {
				t.Fatalf("%s is required (%s=1): %v", tool, EnvRequireNode, err)
			}
			t.Skipf("%s not found: the AsyncAPI export is validated with node and @asyncapi/parser (set %s=1 to make this a failure)", tool, EnvRequireNode)
		}
	}
	validatorOnce.Do(func() {
		dir, err := filepath.Abs(filepath.Join("testdata", "asyncapi-validate"))
		if err != nil {
			validatorOnce.err = err
			return
		}
		validatorOnce.dir = dir
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@asyncapi", "parser", "package.json")); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			validatorOnce.err = &installError{err: err, out: string(out)}
		}
	})
	if validatorOnce.err != nil {
		t.Fatalf("install @asyncapi/parser with npm ci: %v", validatorOnce.err)
	}
	return validatorOnce.dir
}

type installError struct {
	err error
	out string
}

func (e *installError) Error() string { return e.err.Error() + "\n" + e.out }

// validate runs the official parser on the documents (in one node
// process) and returns its output and, per document, whether it accepted it.
func validate(t *testing.T, docs ...[]byte) (string, []bool) {
	t.Helper()
	dir := asyncAPIValidator(t)
	tmp := t.TempDir()
	args := []string{filepath.Join(dir, "validate.mjs")}
	for i, doc := range docs {
		file := filepath.Join(tmp, fmt.Sprintf("asyncapi-%d.json", i))
		if err := os.WriteFile(file, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, file)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("node validate.mjs: %v\n%s", err, out)
	}
	valid := make([]bool, len(docs))
	seen := 0
	for _, line := range strings.Split(string(out), "\n") {
		var file, verdict string
		if _, err := fmt.Sscanf(line, "RESULT %s %s", &file, &verdict); err != nil {
			continue
		}
		for i := range docs {
			if file == args[i+1] {
				valid[i] = verdict == "valid"
				seen++
			}
		}
	}
	if seen != len(docs) {
		t.Fatalf("validator gave %d results for %d documents:\n%s", seen, len(docs), out)
	}
	return string(out), valid
}

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
	out, valid := validate(t, docs...)
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
