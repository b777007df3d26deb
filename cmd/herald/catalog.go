package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/catalog"
	"github.com/spf13/cobra"
)

// sourceFlags say where the manifests come from: a running system's
// key-value bucket (--server) or a JSON file (--from).
type sourceFlags struct {
	nats   string
	prefix string
	from   string
}

func (f *sourceFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	registerNATS(p, &f.nats, "of the running system")
	p.StringVar(&f.prefix, "prefix", envOr("HERALD_NATS_PREFIX", natsjs.DefaultPrefix), "the system's subject and bucket `PREFIX` (env HERALD_NATS_PREFIX)")
	p.StringVar(&f.from, "from", "", "read the manifests from the JSON `FILE` instead of NATS: one manifest, an array, or the output of herald catalog --format json; - for stdin")
}

// connect opens the running system's broker.
func (f *sourceFlags) connect(ctx context.Context) (*natsjs.Broker, error) {
	if f.nats == "" {
		return nil, usageErrorf("where is the system? pass --server URL (or set NATS_URL), or --from FILE")
	}
	return connectNATS(ctx, f.nats, natsjs.WithPrefix(f.prefix))
}

// manifests reads the manifests from --from or the running system.
func (f *sourceFlags) manifests(ctx context.Context, stdin io.Reader) ([]catalog.Manifest, error) {
	if f.from != "" {
		r := stdin
		if f.from != "-" {
			file, err := os.Open(f.from)
			if err != nil {
				return nil, fmt.Errorf("--from: %w", err)
			}
			defer file.Close()
			r = file
		}
		ms, err := catalog.ReadManifests(r)
		if err != nil {
			return nil, fmt.Errorf("--from %s: %w", f.from, err)
		}
		return ms, nil
	}
	b, err := f.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	ms, err := catalog.Load(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no service has published a manifest on %s (prefix %q): are the services started with this broker?", f.nats, f.prefix)
	}
	return ms, nil
}

func (f *sourceFlags) graph(cmd *cobra.Command) (*catalog.Graph, error) {
	ms, err := f.manifests(cmd.Context(), cmd.InOrStdin())
	if err != nil {
		return nil, err
	}
	return catalog.Build(ms)
}

func newCatalog() *cobra.Command {
	var (
		sf     sourceFlags
		format string
		title  string
	)
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Show the whole system from the services' manifests: a tree, Mermaid, DOT, JSON or AsyncAPI 3.0",
		Long: `catalog reads the manifest every herald service publishes when it starts (what it
records, translates, publishes, subscribes to with the versions it accepts,
notifies and sends, with a JSON Schema per contract) from the running system's
JetStream key-value bucket, and renders the whole system. It ends with
warnings: events nobody subscribes to, subscriptions nobody publishes for,
versions a consumer does not accept, schemas that break an accepted version,
and services with no live instance.`,
		Example: `  herald catalog
  herald catalog --format mermaid > system.mmd
  herald catalog --server nats://127.0.0.1:4334 --format asyncapi > asyncapi.json
  herald catalog why order.confirmed
  herald catalog --format dot --from catalog.json | dot -Tsvg > system.svg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(catalog.Formats, format) {
				return usageErrorf("unknown --format %q (want %s)", format, strings.Join(catalog.Formats, ", "))
			}
			g, err := sf.graph(cmd)
			if err != nil {
				return err
			}
			opts := catalog.AsyncAPIOptions{Title: title, SubjectPrefix: sf.prefix}
			if sf.nats != "" {
				opts.Servers = strings.Split(sf.nats, ",")
			}
			return g.Render(cmd.OutOrStdout(), format, opts)
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output `FORMAT`: "+strings.Join(catalog.Formats, ", "))
	cmd.Flags().StringVar(&title, "title", "", "`TITLE` of the AsyncAPI document (default \"herald system\")")

	var whyFormat string
	why := &cobra.Command{
		Use:   "why EVENT",
		Short: "What happens when EVENT is recorded or published, across services",
		Long: `why follows EVENT (a full name, or its end after a dot: order.confirmed) through the
system: the translations of a domain event, the integration events they
publish, the subscriptions that receive them, the domain events those record
(and their translations, again), the notifications they emit and the channels
the notifier sends them on. What a handler records or notifies is what it
declares with herald.Emits; undeclared effects end the chain.`,
		Example: `  herald catalog why order.confirmed
  herald catalog why shop.order.confirmed --format json --from catalog.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if whyFormat != "text" && whyFormat != "json" {
				return usageErrorf("unknown --format %q (want text or json)", whyFormat)
			}
			g, err := sf.graph(cmd)
			if err != nil {
				return err
			}
			step, err := g.Why(args[0])
			if err != nil {
				return err
			}
			switch whyFormat {
			case "text":
				return g.WriteWhy(cmd.OutOrStdout(), step)
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(step)
			}
			return fmt.Errorf("unknown --format %q (want text or json)", whyFormat)
		},
	}
	why.Flags().StringVar(&whyFormat, "format", "text", "output `FORMAT`: text or json")

	forget := &cobra.Command{
		Use:   "forget SERVICE",
		Short: "Remove a retired service's manifest (a stopped service stays listed as stale until then)",
		Long: `forget deletes SERVICE's manifest from the running system's key-value bucket,
so that the catalog no longer lists it. It needs the running system: --from
cannot be used.`,
		Example: `  herald catalog forget reviews
  herald catalog forget reviews --server nats://127.0.0.1:4334`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sf.from != "" {
				return usageErrorf("forget removes a manifest from the running system: --from %s cannot be used (pass --server URL)", sf.from)
			}
			b, err := sf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			raw, err := b.Manifests(cmd.Context())
			if err != nil {
				return err
			}
			if _, ok := raw[args[0]]; !ok {
				return fmt.Errorf("no manifest of a service %q on %s (have %s)", args[0], sf.nats, strings.Join(slices.Sorted(maps.Keys(raw)), ", "))
			}
			if err := b.DeleteManifest(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed the manifest of %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(why, forget)
	return cmd
}

func newSchema() *cobra.Command {
	var (
		sf     sourceFlags
		lock   string
		strict bool
	)
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Check the contracts' schemas against a committed lock file",
		Long: `schema compares the JSON Schemas of the integration and notification contracts
with a lock file committed next to the code. check fails on a breaking change
(a field removed or retyped, a required field added) of a contract whose
version was not bumped; lock writes the lock file.

The contracts come from manifests: a running system (--server) or a JSON file
(--from), e.g. written by a program or test with herald's Service.Manifest.
In a Go project the simplest check is a test with schematest.CheckContracts
or schematest.CheckServices (package github.com/heraldhq/herald/catalog/schematest).`,
		Example: `  herald schema check --lock herald.lock.json --from manifests.json
  herald schema lock  --lock herald.lock.json --server nats://127.0.0.1:4333`,
	}
	sf.register(cmd)
	cmd.PersistentFlags().StringVar(&lock, "lock", "herald.lock.json", "the lock `FILE`")

	check := &cobra.Command{
		Use:   "check",
		Short: "Fail on a breaking contract change without a version bump",
		Example: `  herald schema check --lock herald.lock.json --from manifests.json
  herald schema check --strict   # the running system's contracts, at NATS_URL`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := sf.manifests(cmd.Context(), cmd.InOrStdin())
			if err != nil {
				return err
			}
			l, err := catalog.ReadLock(lock)
			if err != nil {
				return err
			}
			r, err := catalog.CheckLock(l, catalog.ContractsOf(ms))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			pending := 0
			for _, f := range r.Findings {
				if !f.Breaking {
					pending++
					fmt.Fprintln(out, "note:", f.Message)
				}
			}
			if err := r.Err(); err != nil {
				return err
			}
			if pending > 0 && strict {
				return fmt.Errorf("%d change(s) not in %s (--strict): run herald schema lock", pending, lock)
			}
			fmt.Fprintf(out, "ok: no breaking change against %s\n", lock)
			return nil
		},
	}
	check.Flags().BoolVar(&strict, "strict", false, "also fail when the lock is behind compatible changes, new contracts or versions")

	write := &cobra.Command{
		Use:   "lock",
		Short: "Write the lock file from the current contracts",
		Example: `  herald schema lock --lock herald.lock.json --from manifests.json
  herald schema lock   # the running system's contracts, at NATS_URL`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := sf.manifests(cmd.Context(), cmd.InOrStdin())
			if err != nil {
				return err
			}
			l, err := catalog.NewLock(catalog.ContractsOf(ms))
			if err != nil {
				return err
			}
			if err := catalog.WriteLock(lock, l); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d contract version(s)\n", lock, len(l.Contracts))
			return nil
		},
	}
	cmd.AddCommand(check, write)
	return cmd
}
