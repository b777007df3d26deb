package npmci

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeNPM puts an npm (and a node) first on PATH that records each call and creates
// node_modules/dep/package.json in its working directory, as npm ci would.
func fakeNPM(t *testing.T) (calls string) {
	t.Helper()
	bin := t.TempDir()
	calls = filepath.Join(t.TempDir(), "calls")
	script := "#!/bin/sh\necho \"$@\" >> " + calls + "\nmkdir -p node_modules/dep && echo '{}' > node_modules/dep/package.json\n"
	if err := os.WriteFile(filepath.Join(bin, "npm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "node"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+"/usr/bin:/bin")
	return calls
}

func TestInstallRunsNPMCIOnceAndLeavesNoStaging(t *testing.T) {
	calls := fakeNPM(t)
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := Install(context.Background(), dir, "dep/package.json"); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(calls)
	if got := strings.TrimSpace(string(data)); got != "ci --no-audit --no-fund --ignore-scripts" {
		t.Errorf("npm calls: %q, want one npm ci", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "dep", "package.json")); err != nil {
		t.Errorf("node_modules not in place: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".staging-") {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

func TestInstallNamesAMissingLockFile(t *testing.T) {
	fakeNPM(t)
	dir := t.TempDir()
	err := Install(context.Background(), dir, "dep/package.json")
	if err == nil || !strings.Contains(err.Error(), "package.json") {
		t.Fatalf("Install without package.json: %v, want an error naming it", err)
	}
}

func TestAvailableNamesTheMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := Available()
	if err == nil || !strings.Contains(err.Error(), "node") {
		t.Fatalf("Available with an empty PATH: %v, want an error naming node", err)
	}
	t.Setenv(EnvRequireNode, "")
	if Check(t, "test") {
		t.Fatal("Check reported node available with an empty PATH")
	}
}
