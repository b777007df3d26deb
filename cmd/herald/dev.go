package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/spf13/cobra"
)

func newDev() *cobra.Command {
	var listen, dataDir string
	var syncAlways bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded NATS JetStream on a loopback port for services in other processes",
		Long: `dev starts the same embedded NATS JetStream that herald uses in-process, with a
client port on loopback and its files in --data-dir, and prints its URL. Run
each shop service as its own process against it, then stop dev with Ctrl-C.

Services in other processes cannot re-publish what an unsynced server lost
if the machine dies, so dev fsyncs every write (--sync-always, default on).`,
		Example: `  herald dev --listen 127.0.0.1:4333 --data-dir ./nats-data
  go run ./examples/shop/orders   --nats nats://127.0.0.1:4333 --db orders.db   --listen 127.0.0.1:8081
  go run ./examples/shop/shipping --nats nats://127.0.0.1:4333 --db shipping.db --listen 127.0.0.1:8082`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			b, err := natsjs.Embedded(cmd.Context(), natsjs.WithDataDir(dataDir), natsjs.WithListen(listen),
				natsjs.WithSyncAlways(syncAlways), natsjs.WithLogger(log))
			if err != nil {
				return fmt.Errorf("start NATS JetStream on %s with data in %s: %w", listen, dataDir, err)
			}
			defer b.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "NATS JetStream ready: %s (data in %s)\nexport HERALD_NATS_URL=%s\n", b.URL(), dataDir, b.URL())
			<-cmd.Context().Done()
			fmt.Fprintln(cmd.OutOrStdout(), "stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4333", "loopback host:port for NATS clients")
	cmd.Flags().StringVar(&dataDir, "data-dir", "herald-dev-data", "JetStream storage directory")
	cmd.Flags().BoolVar(&syncAlways, "sync-always", true, "fsync every write before acknowledging it")
	return cmd
}
