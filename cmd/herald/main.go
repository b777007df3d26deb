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
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "herald",
		Short:         "Event-driven microservices with domain, integration and notification events",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDemo(), newDev(), newDLQ(), newCatalog(), newSchema(), newTrace(), newTail(), newBench(), newVersion())
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
