// Package npmci installs the npm dependencies of a directory that commits
// its package.json and package-lock.json (the AsyncAPI validator of
// internal/asyncapitest, the shop's Node.js analytics service) with `npm ci`
// into its node_modules, which git ignores and later runs reuse; and it
// holds the rule tests that need node follow: skip without node or npm,
// unless HERALD_TEST_REQUIRE_NODE=1 (CI sets it), which makes that a
// failure.
package npmci

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// EnvRequireNode, set to 1, makes a missing node or npm a test failure
// instead of a skip.
const EnvRequireNode = "HERALD_TEST_REQUIRE_NODE"

// Available reports whether node and npm are on PATH, and if not, which is
// missing.
func Available() error {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: %w", tool, err)
		}
	}
	return nil
}

// Require skips t when node or npm is missing, or fails it when
// HERALD_TEST_REQUIRE_NODE=1; what says what the test needs node for.
func Require(t testing.TB, what string) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv(EnvRequireNode) == "1" {
		t.Fatalf("%s: node and npm are required (%s=1): %v", what, EnvRequireNode, err)
	}
	t.Skipf("%s: %v (set %s=1 to make this a failure)", what, err, EnvRequireNode)
}

// installs serializes Install within the process, per directory.
var installs sync.Map // dir → *sync.Mutex

// Install runs `npm ci` for dir unless dir/node_modules/<probe> exists
// (probe names a file of the last dependency installed, e.g.
// "@asyncapi/parser/package.json"). npm runs in a staging directory whose
// node_modules moves into place with one rename, so that processes
// installing at once (test binaries of several packages) never see a
// half-installed tree (npm ci starts by deleting node_modules).
func Install(ctx context.Context, dir, probe string) error {
	mu, _ := installs.LoadOrStore(dir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	installed := func() bool {
		_, err := os.Stat(filepath.Join(dir, "node_modules", probe))
		return err == nil
	}
	if installed() {
		return nil
	}
	staging, err := os.MkdirTemp(dir, ".staging-")
	if err != nil {
		return fmt.Errorf("npmci: %w", err)
	}
	defer os.RemoveAll(staging)
	for _, f := range []string{"package.json", "package-lock.json"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("npmci: %w", err)
		}
		if err := os.WriteFile(filepath.Join(staging, f), data, 0o644); err != nil {
			return fmt.Errorf("npmci: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = staging
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npmci: npm ci in %s: %w\n%s", staging, err, out)
	}
	if err := os.Rename(filepath.Join(staging, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		if installed() { // another process got there first
			return nil
		}
		return fmt.Errorf("npmci: %w", err)
	}
	return nil
}

// Check is Require for a test that runs without node, only with less:
// it reports whether node and npm are there, logs what is skipped when
// they are not, and fails t when HERALD_TEST_REQUIRE_NODE=1.
func Check(t testing.TB, what string) bool {
	t.Helper()
	err := Available()
	if err == nil {
		return true
	}
	if os.Getenv(EnvRequireNode) == "1" {
		t.Fatalf("%s: node and npm are required (%s=1): %v", what, EnvRequireNode, err)
	}
	t.Logf("%s: skipped: %v (set %s=1 to make this a failure)", what, err, EnvRequireNode)
	return false
}
