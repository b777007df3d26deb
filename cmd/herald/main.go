// Command herald is the CLI of the herald framework: a self-contained demo
// of an event-driven system, and tools for operators.
//
//	herald demo              run orders → shipping on the embedded defaults
//	herald catalog           the system from the services' manifests (tree, Mermaid, DOT, JSON, AsyncAPI)
//	herald catalog why EVENT what an event causes, across services
//	herald schema check      fail on a breaking contract change without a version bump
//	herald trace ID          one flow's causal tree across the three tiers
//	herald tail              follow events live
//	herald version           print the version
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
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
		Short: "Print herald's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := "(devel)"
			if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
				v = bi.Main.Version
			}
			fmt.Fprintln(cmd.OutOrStdout(), "herald", v)
			return nil
		},
	}
}
