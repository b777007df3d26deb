// Command herald is the CLI of the herald framework: a self-contained demo
// of an event-driven system, and tools for operators.
//
//	herald demo              run orders → shipping on the embedded defaults
//	herald dev               an embedded NATS JetStream on a loopback port for services in other processes
//	herald dlq               list, show, replay and purge a service's dead letters
//	herald catalog           the system from the services' manifests (tree, Mermaid, DOT, JSON, AsyncAPI)
//	herald catalog why EVENT what an event causes, across services
//	herald schema check      fail on a breaking contract change without a version bump
//	herald trace ID          one flow's causal tree across the three tiers
//	herald tail              follow events live
//	herald bench             measure herald beside its baselines
//	herald version           print the version and the commit it was built from
//
// Install it with go install github.com/heraldhq/herald/cmd/herald@latest
// (or go install ./cmd/herald in a checkout). It exits 0 on success, 1 on a
// failure and 2 on a usage error.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "herald",
		Short: "Event-driven microservices with domain, integration and notification events",
		Long: `herald runs a demo of an event-driven system, an embedded NATS JetStream for
services in other processes, and the tools to operate them: dead letters, the
catalog, schema checks, causal traces.

Every command that talks to NATS takes --server (-s) URL, or reads
HERALD_NATS_URL or NATS_URL, and defaults to herald dev's ` + devURL + `.

` + exitStatusHelp,
		Example: `  herald demo
  herald dev &
  herald tail
  herald dlq list --service shipping --db shipping.db`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDemo(), newDev(), newDLQ(), newCatalog(), newSchema(), newTrace(), newTail(), newBench(), newVersion())
	markUsageErrors(root)
	return root
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print herald's version and the commit it was built from",
		Long: `version prints the module version (v1.2.3 for go install ...@v1.2.3, a
pseudo-version for a build from a checkout), the VCS commit, whether the
work tree had uncommitted changes, and the Go version. go build and go install
in a git clone record the commit (unless -buildvcs=false); go run does not, nor
does the go command in a git worktree.`,
		Example: `  herald version`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi, _ := debug.ReadBuildInfo()
			fmt.Fprintln(cmd.OutOrStdout(), versionLine(bi))
			return nil
		},
	}
}

// versionLine is herald version's output:
//
//	herald v0.3.1 (commit 0123abcd…, modified, 2026-01-02T03:04:05Z; go1.26.1)
func versionLine(bi *debug.BuildInfo) string {
	if bi == nil {
		return "herald (no build information)"
	}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var about []string
	if rev := set["vcs.revision"]; rev != "" {
		about = append(about, "commit "+rev)
		if set["vcs.modified"] == "true" {
			about = append(about, "modified")
		}
		if t := set["vcs.time"]; t != "" {
			about = append(about, t)
		}
	} else if v == "(devel)" {
		about = append(about, "no commit recorded: built by go run, with -buildvcs=false or outside a git clone")
	}
	detail := bi.GoVersion
	if len(about) > 0 {
		detail = strings.Join(about, ", ") + "; " + detail
	}
	return fmt.Sprintf("herald %s (%s)", v, detail)
}
