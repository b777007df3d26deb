package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testdb"
)

// runExit runs the CLI as main does and returns its exit status, stdout and
// stderr.
func runExit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = execute(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// clearNATSEnv makes the test independent of the machine's environment.
func clearNATSEnv(t *testing.T) {
	t.Setenv("HERALD_NATS_URL", "")
	t.Setenv("NATS_URL", "")
}

// TestExitStatuses: 0 for success, 1 for a failure of what was checked, 2
// for a usage error, which also says how to get the command's help.
func TestExitStatuses(t *testing.T) {
	clearNATSEnv(t)
	dir := t.TempDir()
	lock, before, after := filepath.Join(dir, "herald.lock.json"), filepath.Join(dir, "before.json"), filepath.Join(dir, "after.json")
	billing, ledger := paymentServices(t)
	writeManifests(t, before, billing, ledger)
	retyped, err := herald.New("billing", herald.WithStore(testdb.SQLite(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := retyped.Register(herald.Integration[paidRetyped]("pay.payment.received")); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, after, retyped)

	for _, c := range []struct {
		args []string
		code int
		help string // the command whose --help a usage error points to
	}{
		{[]string{"version"}, exitOK, ""},
		{[]string{"--help"}, exitOK, ""},
		{[]string{"dlq"}, exitOK, ""}, // a command group prints its help
		{[]string{"schema", "lock", "--lock", lock, "--from", before}, exitOK, ""},
		{[]string{"schema", "check", "--lock", lock, "--from", before}, exitOK, ""},
		{[]string{"schema", "check", "--lock", lock, "--from", after}, exitFailure, ""}, // a breaking change
		{[]string{"schema", "check", "--lock", filepath.Join(dir, "missing.json"), "--from", before}, exitFailure, ""},
		{[]string{"bogus"}, exitUsage, "herald"},
		{[]string{"dlq", "bogus"}, exitUsage, "herald dlq"},
		{[]string{"catalog", "--bogus"}, exitUsage, "herald catalog"},
		{[]string{"dlq", "list", "--limit", "many"}, exitUsage, "herald dlq list"},
		{[]string{"trace"}, exitUsage, "herald trace"},
		{[]string{"trace", "a", "b"}, exitUsage, "herald trace"},
		{[]string{"version", "extra"}, exitUsage, "herald version"},
		{[]string{"demo", "--rate", "0"}, exitUsage, "herald demo"},
		{[]string{"demo", "--duration", "soon"}, exitUsage, "herald demo"},
		{[]string{"tail", "--kind", "bogus"}, exitUsage, "herald tail"},
		{[]string{"catalog", "--format", "svg", "--from", before}, exitUsage, "herald catalog"},
		{[]string{"catalog", "why", "x", "--format", "yaml", "--from", before}, exitUsage, "herald catalog why"},
		{[]string{"catalog", "forget", "billing", "--from", before}, exitUsage, "herald catalog forget"}, // it ignored --from
		{[]string{"bench", "--events", "0"}, exitUsage, "herald bench"},
		{[]string{"bench", "nosuch"}, exitUsage, "herald bench"},
		{[]string{"catalog", "-s", "http://127.0.0.1:1"}, exitUsage, "herald catalog"},
	} {
		code, _, stderr := runExit(t, c.args...)
		if code != c.code {
			t.Errorf("herald %s: exit %d, want %d; stderr:\n%s", strings.Join(c.args, " "), code, c.code, stderr)
			continue
		}
		if c.code == exitUsage && !strings.Contains(stderr, "Run '"+c.help+" --help' for usage.") {
			t.Errorf("herald %s: stderr does not point to %s --help:\n%s", strings.Join(c.args, " "), c.help, stderr)
		}
		if c.code != exitOK && !strings.HasPrefix(stderr, "herald: ") {
			t.Errorf("herald %s: stderr does not start with the error:\n%s", strings.Join(c.args, " "), stderr)
		}
	}
}

// TestRootHelpDocumentsExitStatuses: scripts learn the statuses from
// herald --help.
func TestRootHelpDocumentsExitStatuses(t *testing.T) {
	code, out, _ := runExit(t, "--help")
	for _, want := range []string{"Exit status:", "0  success", "1  failure", "2  usage error"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("herald --help (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
}
