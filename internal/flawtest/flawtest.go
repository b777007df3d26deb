// Package flawtest proves a conformance suite can fail: it runs the suite
// against deliberately broken implementations, each in a child process of
// the test binary, and checks that every flaw fails the suite in the case
// expected to catch it, while the unbroken implementation passes every one
// of those cases (a skip would hide a flaw).
//
// A test package has two tests: a parent that calls Run, and a child (named
// in Config.Child) that reads its flaw with Flaw and runs the suite against
// an implementation broken that way ("none": unbroken).
package flawtest

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/childproc"
)

// None is the flaw of the unbroken run.
const None = "none"

// Config says which child test runs the suite and what each flaw must break.
type Config struct {
	// Child is the child test's name, e.g. "TestFlawedBroker".
	Child string
	// Env is the environment variable that carries the flaw to the child.
	Env string
	// Flaws maps each flaw to the suite cases ("Inbox/Claim": subtest
	// paths below Child) it is run with; the first must fail.
	Flaws map[string][]string
}

// Run runs the child once unbroken and once per flaw, in parallel, and
// fails t for a flaw the suite lets pass or a case the unbroken run does
// not pass. Inside a child process it does nothing.
func Run(t *testing.T, c Config) {
	t.Helper()
	if os.Getenv(c.Env) != "" {
		t.Skip("child process")
	}
	var all []string
	for _, cases := range c.Flaws {
		all = append(all, cases...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	child := func(t *testing.T, flaw string, cases []string) (string, error) {
		alts := make([]string, len(cases))
		for i, cs := range cases {
			alts[i] = "^" + c.Child + "$/^" + strings.ReplaceAll(cs, "/", "$/^") + "$"
		}
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+strings.Join(alts, "|"), "-test.v", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), c.Env+"="+flaw)
		childproc.DieWithParent(cmd)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Run(None, func(t *testing.T) {
		t.Parallel()
		out, err := child(t, None, all)
		if err != nil {
			t.Fatalf("the suite failed the unbroken implementation: %v\n%s", err, out)
		}
		for _, cs := range all {
			if !strings.Contains(out, "--- PASS: "+c.Child+"/"+cs+" ") {
				t.Errorf("case %s did not pass (a skip would hide a flaw):\n%s", cs, out)
			}
		}
	})
	for flaw, cases := range c.Flaws {
		t.Run(flaw, func(t *testing.T) {
			t.Parallel()
			out, err := child(t, flaw, cases)
			if err == nil {
				t.Fatalf("the suite passed an implementation with flaw %s:\n%s", flaw, out)
			}
			if want := "--- FAIL: " + c.Child + "/" + cases[0] + " "; !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		})
	}
}

// Flaw returns the flaw a child process runs with; outside one it skips t.
func Flaw(t *testing.T, env, parent string) string {
	t.Helper()
	flaw := os.Getenv(env)
	if flaw == "" {
		t.Skip("run by " + parent)
	}
	return flaw
}
