package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/spf13/cobra"
)

func newDev() *cobra.Command {
	var listen, dataDir string
	var syncAlways, verbose bool
	var scale scaleFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded NATS JetStream on a loopback port for services in other processes",
		Long: `dev starts the same embedded NATS JetStream that herald uses in-process, with a
client port on loopback and its files in --data-dir, and prints its URL. Run
each shop service as its own process against it, then stop dev with Ctrl-C.

The other herald commands and the shop's services connect to dev's default
URL, ` + devURL + `, unless told otherwise; for another --listen, dev prints
the export NATS_URL=... line that makes them use it.

Services in other processes cannot re-publish what an unsynced server lost
if the machine dies, so dev fsyncs every write (--sync-always, default on).
It keeps the services' causal trace stream on file too, so that herald trace
and herald tail see what was recorded before dev restarted.

--partitions N is for the services, which create the streams: dev checks it
and prints the export HERALD_PARTITIONS=N line that gives every service the
same count. dev is one node, so --replicas must stay 1: replicas need a NATS
cluster, whose node URLs the services take with --server.`,
		Example: `  herald dev --data-dir ./nats-data
  go run ./examples/shop/orders   --db orders.db   --listen 127.0.0.1:8081
  go run ./examples/shop/shipping --db shipping.db --listen 127.0.0.1:8082
  herald dev --listen 127.0.0.1:4334 &   # another port: then export the NATS_URL it prints
  herald dev --partitions 4 &            # then export the HERALD_PARTITIONS it prints`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := scale.check(true); err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			b, err := natsjs.Embedded(cmd.Context(), natsjs.WithDataDir(dataDir), natsjs.WithListen(listen),
				natsjs.WithSyncAlways(syncAlways), natsjs.WithLogger(log), natsjs.WithServerLogLevel(serverLogLevel(verbose)),
				natsjs.WithTraceStorage(natsjs.TraceOnFile), natsjs.WithPartitions(scale.partitions))
			if err != nil {
				if errors.Is(err, natsjs.ErrInvalidOption) {
					return usageErrorf("--listen %s: %w", listen, err)
				}
				hint := ""
				if strings.Contains(err.Error(), "address already in use") {
					hint = " (is another herald dev or NATS server running there? Pick another port with --listen)"
				}
				return fmt.Errorf("start NATS JetStream on %s with data in %s: %w%s", listen, dataDir, err, hint)
			}
			defer b.Close()
			// The trace stream, on file, before any service creates it in
			// memory: herald trace and herald tail read what the services
			// recorded before dev restarted.
			if err := b.ProvisionTrace(cmd.Context(), 0, 0); err != nil {
				return fmt.Errorf("create the trace stream: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "NATS JetStream ready: %s (data in %s)\nexport NATS_URL=%s\n", b.URL(), dataDir, b.URL())
			if scale.partitions != natsjs.DefaultPartitions {
				fmt.Fprintf(out, "export HERALD_PARTITIONS=%d\n", scale.partitions)
			}
			if h := os.Getenv("HERALD_NATS_URL"); h != "" && h != b.URL() {
				fmt.Fprintf(out, "note: HERALD_NATS_URL=%s is set and wins over NATS_URL: unset HERALD_NATS_URL\n", h)
			}
			<-cmd.Context().Done()
			fmt.Fprintln(cmd.OutOrStdout(), "stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", devListen, "loopback `HOST:PORT` for NATS clients (port 0: a free one)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "herald-dev-data", "JetStream storage `DIR`")
	cmd.Flags().BoolVar(&syncAlways, "sync-always", true, "fsync every write before acknowledging it")
	cmd.Flags().BoolVar(&verbose, "verbose", false, verboseUsage)
	registerScale(cmd.Flags(), &scale)
	return cmd
}

// verboseUsage is the --verbose flag of the commands that embed a NATS
// server.
const verboseUsage = "log the embedded NATS server's notices (its start-up banner and settings, its shutdown) on stderr, not only its warnings"

// serverLogLevel is the embedded server's log level for --verbose.
func serverLogLevel(verbose bool) slog.Level {
	if verbose {
		return slog.LevelInfo
	}
	return natsjs.DefaultServerLogLevel
}
