package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}
	for _, c := range []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{&debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v0.0.0-20260102030405-0123456789ab+dirty"}, Settings: vcs},
			"herald v0.0.0-20260102030405-0123456789ab+dirty (commit 0123456789abcdef0123456789abcdef01234567, modified, 2026-01-02T03:04:05Z; go1.26.1)"},
		{&debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v1.2.3"}},
			"herald v1.2.3 (go1.26.1)"}, // go install ...@v1.2.3: no VCS information, and none needed
		{&debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}},
			"herald (devel) (no commit recorded: built by go run, with -buildvcs=false or outside a git clone; go1.26.1)"},
		{nil, "herald (no build information)"},
	} {
		if got := versionLine(c.bi); got != c.want {
			t.Errorf("versionLine:\n got %s\nwant %s", got, c.want)
		}
	}
}

// TestVersionOfABuiltBinary builds herald from this checkout with VCS
// stamping on (this machine's go env may turn it off) and checks that
// herald version names the checkout's commit and whether it is modified.
func TestVersionOfABuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the herald binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout (or no git): %v", err)
	}
	status, err := exec.Command("git", "status", "--porcelain").Output()
	if err != nil {
		t.Skipf("git status: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "herald")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("herald version: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	t.Log(got)
	if strings.Contains(got, "no commit recorded") {
		// The go command finds a git repository by a .git directory: in a
		// worktree, whose .git is a file, it records nothing.
		if gomod, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
			if fi, err := os.Stat(filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), ".git")); err == nil && !fi.IsDir() {
				t.Skipf("a git worktree: go build records no VCS information here (%s)", got)
			}
		}
	}
	rev := strings.TrimSpace(string(head))
	if !strings.Contains(got, "commit "+rev) || strings.Contains(got, "(devel)") {
		t.Errorf("herald version = %q, want the module's pseudo-version and commit %s", got, rev)
	}
	if modified := len(strings.TrimSpace(string(status))) > 0; modified != strings.Contains(got, ", modified,") {
		t.Errorf("herald version = %q; git status says modified = %v", got, modified)
	}
}
