package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/store"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/spf13/cobra"
)

// storeFlags are the flags every command that reads a service's database
// shares, with their environment variables.
type storeFlags struct {
	service  string
	db       string
	postgres string
	nats     string
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (f *storeFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.service, "service", envOr("HERALD_SERVICE", ""), "the `SERVICE` whose dead letters to use (env HERALD_SERVICE)")
	p.StringVar(&f.db, "db", envOr("HERALD_DB", ""), "the service's SQLite database `FILE` (env HERALD_DB)")
	p.StringVar(&f.postgres, "postgres", envOr("HERALD_POSTGRES_URL", ""), "the service's PostgreSQL `URL`, instead of --db (env HERALD_POSTGRES_URL)")
	registerNATS(p, &f.nats, "where the service's instances answer (without --db/--postgres), and for replay")
}

func (f *storeFlags) openStore(ctx context.Context) (*store.Store, error) {
	switch {
	case f.service == "":
		return nil, usageErrorf("which service? pass --service NAME (or set HERALD_SERVICE)")
	case f.postgres != "" && f.db != "":
		return nil, usageErrorf("pass --db or --postgres, not both")
	case f.postgres != "":
		if err := f.checkDatabase(ctx); err != nil {
			return nil, err
		}
		return postgres.Open(ctx, f.postgres)
	case f.db != "":
		if _, err := os.Stat(f.db); err != nil {
			return nil, fmt.Errorf("--db %s: %w (pass the service's database file)", f.db, err)
		}
		if err := f.checkDatabase(ctx); err != nil {
			return nil, err
		}
		return sqlite.Open(ctx, f.db)
	}
	return nil, usageErrorf("where is the service's database? pass --db FILE or --postgres URL (or set HERALD_DB / HERALD_POSTGRES_URL)")
}

type dlqFilter struct {
	subscription, typ, reason string
	ids                       []int64
	limit                     int
	all                       bool
	producer                  bool
}

func (d *dlqFilter) register(cmd *cobra.Command, withAll bool) {
	fl := cmd.Flags()
	fl.StringVar(&d.subscription, "subscription", "", "only this `SUBSCRIPTION`")
	fl.StringVar(&d.typ, "type", "", "only this event `TYPE`")
	fl.StringVar(&d.reason, "reason", "", "only this `REASON`: "+strings.Join(subscriberReasons, ", ")+"; producer side: "+strings.Join(producerReasons, ", "))
	fl.BoolVar(&d.producer, "producer", false, "only producer-side dead letters: events of the service's outbox its relay parked")
	fl.Int64SliceVar(&d.ids, "id", nil, "only the dead letter `ID` (repeatable, or comma-separated)")
	fl.IntVar(&d.limit, "limit", 0, "at most `N` dead letters (0: no limit)")
	if withAll {
		fl.BoolVar(&d.all, "all", false, "every dead letter of the service (required when no other filter is given)")
	}
}

func (d *dlqFilter) filter(requireSome bool) (herald.DeadLetterFilter, error) {
	f := herald.DeadLetterFilter{Subscription: d.subscription, Type: d.typ, Reason: d.reason, IDs: d.ids, Limit: d.limit,
		ProducerSide: d.producer}
	if err := checkReason(d.reason); err != nil {
		return f, err
	}
	if d.limit < 0 {
		return f, usageErrorf("--limit %d: want 0 (no limit) or more", d.limit)
	}
	empty := d.subscription == "" && d.typ == "" && d.reason == "" && len(d.ids) == 0 && !d.producer
	if requireSome && empty && !d.all {
		return f, usageErrorf("say which dead letters: --id, --subscription, --type, --reason, --producer, or --all")
	}
	return f, nil
}

func newDLQ() *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, inspect, replay and purge a service's dead letters",
		Long: `dlq works on the dead letters of one service. By default it asks a running
instance of the service through the broker (--server), so it needs no database
credentials; for a service that is down, pass its database (--db, --postgres)
and dlq reads it directly. A dead
letter keeps the message exactly as it arrived, the reason (malformed,
unknown-type, version, exhausted, permanent), the attempts and the last error.
Replay re-delivers each dead letter to the subscription that gave up on it, and
to no other, through the broker; purge deletes them.

Producer-side dead letters (subscription "(producer)", --producer) are events
of the service's own outbox that its relay parked: one the broker refused for
good (reason refused, e.g. larger than the server's max payload), and the later
events of the same partition key, held behind it so that none overtakes it
(reason held). Replay puts them back into the outbox, in the order they were
parked, and the service's relay publishes them again (no --server needed); a
key's parked events go back together (selecting one replays all of its key);
one refused again is parked again. Purge discards them. Either frees the key once
none of its events is parked.`,
		Example: `  herald dlq list --service shipping                       # a running instance, through herald dev's NATS
  herald dlq list --service shipping --server nats://10.0.0.5:4222
  herald dlq replay --service shipping --reason exhausted --dry-run
  herald dlq list --service shipping --db shipping.db        # a service that is down: its database
  herald dlq show 42 --service shipping --db shipping.db
  herald dlq replay --service shipping --db shipping.db --all --server nats://127.0.0.1:4333
  herald dlq purge --service shipping --postgres postgres://... --reason malformed
  herald dlq replay --service orders --db orders.db --producer`,
	}
	sf.register(cmd)

	var lf dlqFilter
	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Example: `  herald dlq list --service shipping --db shipping.db
  herald dlq list --service shipping --db shipping.db --reason exhausted --limit 20
  herald dlq list --service shipping --db shipping.db --json | jq .id`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := lf.filter(false)
			if err != nil {
				return err
			}
			src, err := openSource(cmd.Context(), &sf, false)
			if err != nil {
				return err
			}
			defer src.Close()
			dls, err := src.DeadLetters(cmd.Context(), f)
			if err != nil {
				return err
			}
			if listJSON {
				return writeDeadLettersJSON(cmd.OutOrStdout(), dls)
			}
			if len(dls) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), noDeadLetters(sf.service, f))
				return nil
			}
			printDeadLetters(cmd.OutOrStdout(), dls)
			return nil
		},
	}
	lf.register(list, false)
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON lines, one per dead letter, with the fields of dlq show (nothing when there are none)")

	show := &cobra.Command{
		Use:     "show ID",
		Short:   "Show one dead letter with its headers and data",
		Example: `  herald dlq show 42 --service shipping --db shipping.db`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return usageErrorf("dead-letter id %q is not a number", args[0])
			}
			src, err := openSource(cmd.Context(), &sf, false)
			if err != nil {
				return err
			}
			defer src.Close()
			d, err := src.DeadLetter(cmd.Context(), id)
			if err != nil {
				return err
			}
			return showDeadLetter(cmd.OutOrStdout(), d)
		},
	}

	var rf dlqFilter
	var dry bool
	replay := &cobra.Command{
		Use:   "replay",
		Short: "Re-deliver dead letters to their subscriptions (--dry-run shows what would be replayed)",
		Example: `  herald dlq replay --service shipping --db shipping.db --reason exhausted --dry-run
  herald dlq replay --service shipping --db shipping.db --id 42 --id 43
  herald dlq replay --service shipping --db shipping.db --all --server nats://127.0.0.1:4334`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := rf.filter(true)
			if err != nil {
				return err
			}
			src, err := openSource(cmd.Context(), &sf, true)
			if err != nil {
				return err
			}
			defer src.Close()
			dls, err := src.Replay(cmd.Context(), f, dry)
			if dry {
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "would replay %d dead letters:\n", len(dls))
				printDeadLetters(cmd.OutOrStdout(), dls)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "replayed %d dead letters\n", len(dls))
			return err
		},
	}
	rf.register(replay, true)
	replay.Flags().BoolVar(&dry, "dry-run", false, "only show what would be replayed")

	var pf dlqFilter
	var pdry bool
	purge := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead letters (--dry-run shows what would be deleted)",
		Example: `  herald dlq purge --service shipping --db shipping.db --reason malformed --dry-run
  herald dlq purge --service shipping --postgres "$HERALD_POSTGRES_URL" --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := pf.filter(true)
			if err != nil {
				return err
			}
			src, err := openSource(cmd.Context(), &sf, false)
			if err != nil {
				return err
			}
			defer src.Close()
			if pdry {
				dls, err := src.DeadLetters(cmd.Context(), f)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "would purge %d dead letters:\n", len(dls))
				printDeadLetters(cmd.OutOrStdout(), dls)
				return nil
			}
			n, err := src.Purge(cmd.Context(), f)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d dead letters\n", n)
			return nil
		},
	}
	pf.register(purge, true)
	purge.Flags().BoolVar(&pdry, "dry-run", false, "only show what would be purged")

	cmd.AddCommand(list, show, replay, purge)
	return cmd
}

// openService opens the service's store (and, for replay, its broker) and
// returns a herald.Service on them that is never started.
func openService(ctx context.Context, sf *storeFlags, withBroker bool) (*herald.Service, func(), error) {
	st, err := sf.openStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := checkService(ctx, st, sf.where(), sf.service); err != nil {
		st.Close()
		return nil, nil, err
	}
	opts := []herald.Option{herald.WithStore(st)}
	var b *natsjs.Broker
	if withBroker {
		if sf.nats == "" {
			st.Close()
			return nil, nil, usageErrorf("replay goes through the broker: pass --server nats://HOST:PORT (or set NATS_URL)")
		}
		b, err = connectNATS(ctx, sf.nats)
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		opts = append(opts, herald.WithBroker(b))
	}
	svc, err := herald.New(sf.service, opts...)
	if err != nil {
		st.Close()
		if b != nil {
			b.Close()
		}
		return nil, nil, err
	}
	return svc, func() {
		svc.Close()
		if b != nil {
			b.Close()
		}
		st.Close()
	}, nil
}

// allProducerSide reports whether every one of dls is a producer-side dead
// letter, which replays without the broker.
func allProducerSide(dls []herald.DeadLetter) bool {
	for _, d := range dls {
		if !d.ProducerSide() {
			return false
		}
	}
	return true
}

// producerMark stands for the subscription of a producer-side dead letter.
const producerMark = "(producer)"

func subscriptionOf(d herald.DeadLetter) string {
	if d.ProducerSide() {
		return producerMark
	}
	return d.Subscription
}

func printDeadLetters(w io.Writer, dls []herald.DeadLetter) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tSUBSCRIPTION\tTYPE\tVERSION\tREASON\tATTEMPTS\tLAST ERROR")
	for _, d := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", d.ID, d.Time.Format(time.RFC3339), subscriptionOf(d), orDash(d.Type),
			d.Version, d.Reason, d.Attempts, clip(d.LastError, 80))
	}
	tw.Flush()
	if len(dls) == 0 {
		fmt.Fprintln(w, "(no dead letters)")
	}
}

func showDeadLetter(w io.Writer, d herald.DeadLetter) error {
	data := any(string(d.Data))
	if !utf8.Valid(d.Data) {
		data = d.Data // JSON encodes it as base64
	} else if json.Valid(d.Data) {
		data = json.RawMessage(d.Data)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	side := "subscriber"
	if d.ProducerSide() {
		side = "producer"
	}
	return enc.Encode(map[string]any{
		"id": d.ID, "service": d.Service, "subscription": d.Subscription, "event_id": d.EventID,
		"type": d.Type, "version": d.Version, "reason": d.Reason, "last_error": d.LastError,
		"attempts": d.Attempts, "time": d.Time, "header": d.Header, "data": data,
		"side": side, "partition_key": d.Key,
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
