package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/internal/testlog"
	"github.com/heraldhq/herald/internal/testwait"
)

// TestScaleFlagsRejectBadValues: --partitions and --replicas of herald demo
// and herald dev, and their environment variables, fail with exit status 2
// and a message naming the flag (or variable) before anything starts; more
// than one replica on the embedded single node says a cluster is needed.
func TestScaleFlagsRejectBadValues(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"demo", "--partitions", "0"}, want: "--partitions 0: want 1 to 256"},
		{args: []string{"dev", "--partitions", "257"}, want: "--partitions 257: want 1 to 256"},
		{args: []string{"dev", "--partitions", "four"}, want: `invalid argument "four" for "--partitions"`},
		{args: []string{"demo", "--replicas", "0"}, want: "--replicas 0: want 1 to 5"},
		{args: []string{"dev", "--replicas", "6"}, want: "--replicas 6: want 1 to 5"},
		{args: []string{"dev", "--replicas", "3"}, want: "--replicas 3: replicas need a NATS cluster"},
		{args: []string{"demo", "--replicas", "3"}, want: "--server URLS of its nodes"},
		{args: []string{"dev"}, env: map[string]string{"HERALD_PARTITIONS": "x"}, want: `HERALD_PARTITIONS="x": want a whole number`},
		{args: []string{"demo"}, env: map[string]string{"HERALD_REPLICAS": "3"}, want: "--replicas 3: replicas need a NATS cluster"},
		{args: []string{"dev"}, env: map[string]string{"HERALD_PARTITIONS": "300"}, want: "--partitions 300"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Setenv("HERALD_PARTITIONS", "")
			t.Setenv("HERALD_REPLICAS", "")
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			args := append(append([]string{}, c.args...), "--data-dir", t.TempDir())
			if code := execute(context.Background(), args, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), c.want) {
				t.Errorf("herald %v with %v: exit %d, stderr %q; want exit %d naming %q", c.args, c.env, code, errb.String(), exitUsage, c.want)
			}
		})
	}
}

// TestScaleFlagsFromEnv: the flags default to HERALD_PARTITIONS and
// HERALD_REPLICAS, and a flag wins over its variable.
func TestScaleFlagsFromEnv(t *testing.T) {
	for _, c := range []struct {
		env            [2]string // HERALD_PARTITIONS, HERALD_REPLICAS
		args           []string
		partitions, rf int
	}{
		{[2]string{"", ""}, nil, 1, 1},
		{[2]string{"8", "3"}, nil, 8, 3},
		{[2]string{"8", "3"}, []string{"--partitions", "2", "--replicas", "1"}, 2, 1},
		{[2]string{"", ""}, []string{"--partitions", "16"}, 16, 1},
	} {
		t.Setenv("HERALD_PARTITIONS", c.env[0])
		t.Setenv("HERALD_REPLICAS", c.env[1])
		// The commands are built anew so that their defaults read the
		// environment of this case.
		for name, cmd := range map[string]*cobra.Command{"demo": newDemo(), "dev": newDev()} {
			if err := cmd.ParseFlags(c.args); err != nil {
				t.Fatalf("%s %v: %v", name, c.args, err)
			}
			p, _ := cmd.Flags().GetInt("partitions")
			r, _ := cmd.Flags().GetInt("replicas")
			if p != c.partitions || r != c.rf {
				t.Errorf("%s %v with env %v: partitions %d, replicas %d; want %d, %d", name, c.args, c.env, p, r, c.partitions, c.rf)
			}
		}
	}
}

// TestDevPrintsThePartitionsExport: herald dev --partitions 4 prints the
// export line that gives the services in other processes the same count,
// and without --partitions no such line.
func TestDevPrintsThePartitionsExport(t *testing.T) {
	clearNATSEnv(t)
	t.Setenv("HERALD_PARTITIONS", "")
	t.Setenv("HERALD_REPLICAS", "")
	for _, c := range []struct {
		args []string
		want bool
	}{{[]string{"--partitions", "4"}, true}, {nil, false}} {
		ctx, cancel := context.WithCancel(context.Background())
		var out testlog.Buffer
		cmd := newRoot()
		cmd.SetOut(&out)
		cmd.SetErr(&testlog.Buffer{})
		cmd.SetArgs(append([]string{"dev", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, c.args...))
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx) }()
		testwait.UntilReport(t, 30*time.Second, func() bool { return strings.Contains(out.String(), "export NATS_URL=") },
			func() string { return "herald dev printed no export line:\n" + out.String() })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("herald dev %v: %v", c.args, err)
		}
		if got := strings.Contains(out.String(), "\nexport HERALD_PARTITIONS=4\n"); got != c.want {
			t.Errorf("herald dev %v: export HERALD_PARTITIONS=4 printed = %v, want %v:\n%s", c.args, got, c.want, out.String())
		}
	}
}
