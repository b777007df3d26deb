// Package asyncapitest validates AsyncAPI documents in tests with the
// official parser, @asyncapi/parser, run by the machine's node: herald's
// export is checked by the reference implementation, not by herald's own
// code. The validator (testdata/validator: package.json, package-lock.json,
// validate.mjs) is installed with `npm ci` on first use into its
// node_modules, which git ignores and later runs reuse (internal/npmci).
//
// Without node or npm the tests skip, unless HERALD_TEST_REQUIRE_NODE=1 (CI
// sets it), which makes that a failure.
package asyncapitest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/npmci"
)

// EnvRequireNode, set to 1, makes a missing node or npm a test failure
// instead of a skip.
const EnvRequireNode = npmci.EnvRequireNode

// validatorDir returns the validator's directory with its node_modules
// installed. It skips t when node or npm is missing (see EnvRequireNode).
func validatorDir(t testing.TB) string {
	t.Helper()
	npmci.Require(t, "asyncapitest: AsyncAPI documents are validated with node and @asyncapi/parser")
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("asyncapitest: cannot locate the validator")
	}
	dir := filepath.Join(filepath.Dir(file), "testdata", "validator")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := npmci.Install(ctx, dir, "@asyncapi/parser/package.json"); err != nil {
		t.Fatalf("asyncapitest: install @asyncapi/parser: %v", err)
	}
	return dir
}

// Validate runs the official parser on the documents, in one node process
// (loading the parser takes seconds), and returns its output (every
// diagnostic) and, per document, whether the parser accepted it: it gave a
// document back and no diagnostic of severity error.
func Validate(t testing.TB, docs ...[]byte) (output string, valid []bool) {
	t.Helper()
	dir := validatorDir(t)
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
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("asyncapitest: node validate.mjs: %v\n%s", err, out)
	}
	valid = make([]bool, len(docs))
	seen := 0
	for _, line := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(line, "RESULT ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			continue
		}
		for j := range docs {
			if rest[:i] == args[j+1] {
				valid[j] = rest[i+1:] == "valid"
				seen++
			}
		}
	}
	if seen != len(docs) {
		t.Fatalf("asyncapitest: the validator gave %d results for %d documents:\n%s", seen, len(docs), out)
	}
	return string(out), valid
}
