package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/envelope"
	"github.com/heraldhq/herald/trace"
	"github.com/spf13/cobra"
)

// brokerFlags name the NATS server whose trace stream the commands read.
type brokerFlags struct {
	nats   string
	prefix string
}

func (f *brokerFlags) register(cmd *cobra.Command) {
	registerNATS(cmd.Flags(), &f.nats, "whose trace stream to read")
	cmd.Flags().StringVar(&f.prefix, "prefix", envOr("HERALD_NATS_PREFIX", natsjs.DefaultPrefix), "the services' subject `PREFIX` (natsjs.WithPrefix; env HERALD_NATS_PREFIX)")
}

func (f *brokerFlags) connect(ctx context.Context) (*natsjs.Broker, error) {
	if f.nats == "" {
		return nil, usageErrorf("the trace is on the broker: pass --server nats://HOST:PORT (or set NATS_URL; herald dev prints it)")
	}
	return connectNATS(ctx, f.nats, natsjs.WithPrefix(f.prefix))
}

func newTrace() *cobra.Command {
	var f brokerFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "trace <correlation-or-event-id>",
		Short: "Print the causal tree of one business flow, with per-hop timings across the three tiers",
		Long: `trace reads the causal trace records the services keep on the broker (services
record them with a trace.Recorder; the shop does by default) and prints the flow
the id names — a correlation id, or the id of any event in the flow — as a tree:
each event under the event that caused it, with its hops (record, translate,
notify, publish, consume, handle, dead-letter, deliver), where each happened,
its outcome, when it started relative to the flow's first hop and how long it
took. Causes missing from the trace (records dropped, or older than the
stream keeps) are listed as gaps.

In the shop a flow is named after its order: herald trace <order id>.`,
		Example: `  herald trace 01J9Z3X1Q4T0J8S1V5M2C7D6EA
  herald trace 01J9Z3X1Q4T0J8S1V5M2C7D6EA --server nats://127.0.0.1:4334 --json | jq .`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := strings.TrimSpace(args[0])
			if id == "" {
				return usageErrorf("empty id: pass a correlation id or an event id")
			}
			b, err := f.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			recs, err := trace.Collect(cmd.Context(), b, id)
			if err != nil {
				return traceReadError(err, f.nats)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), recs)
			}
			return trace.Build(recs).Format(cmd.OutOrStdout())
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON lines instead of the tree")
	return cmd
}

func newTail() *cobra.Command {
	var f brokerFlags
	var filter trace.Filter
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow trace records live, filtered by event type, service, kind or hop",
		Long: `tail prints every trace record stored from now on, one line each: time, hop,
service (and subscription), kind, type, event id, outcome, flow, duration.
Each filter flag may be repeated; records pass if they match one value of
every filter given. Stop with Ctrl-C.`,
		Example: `  herald tail
  herald tail --service shipping --kind integration
  herald tail --type shop.order.confirmed --hop handle --hop dead-letter`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, k := range filter.Kinds {
				if !envelope.Kind(k).Valid() {
					return usageErrorf("--kind %q: want domain, integration or notification", k)
				}
			}
			for _, h := range filter.Hops {
				if !validHop(h) {
					return usageErrorf("--hop %q: want one of %s", h, strings.Join(hops, ", "))
				}
			}
			b, err := f.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			out := cmd.OutOrStdout()
			return trace.Follow(cmd.Context(), b, filter, func(r trace.Record) error {
				if asJSON {
					return writeJSON(out, []trace.Record{r})
				}
				return trace.FormatLine(out, r)
			})
		},
	}
	f.register(cmd)
	cmd.Flags().StringArrayVar(&filter.Types, "type", nil, "only this event `TYPE` (repeatable)")
	cmd.Flags().StringArrayVar(&filter.Services, "service", nil, "only hops in this `SERVICE` (repeatable)")
	cmd.Flags().StringArrayVar(&filter.Kinds, "kind", nil, "only this `KIND`: domain, integration, notification (repeatable)")
	cmd.Flags().StringArrayVar(&filter.Hops, "hop", nil, "only this `HOP`: "+strings.Join(hops, ", ")+" (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	return cmd
}

// traceReadError tells a missing trace stream from a trace without the
// flow asked for: services may be recording on a server whose stream was
// lost, and the stream may hold only other flows.
func traceReadError(err error, server string) error {
	switch {
	case errors.Is(err, broker.ErrNotProvisioned):
		return fmt.Errorf("no trace stream on %s yet: a service with a trace recorder creates it when it starts, "+
			"and again when it next records after a server restart lost it (herald dev keeps it on file): %w", server, err)
	case errors.Is(err, trace.ErrNotFound):
		return fmt.Errorf("no trace records of this flow on %s: pass a correlation id or the id of a recorded event; "+
			"records beyond the trace stream's limits (24h or 64 MiB by default) are dropped: %w", server, err)
	}
	return err
}

var hops = []string{string(herald.HopRecord), string(herald.HopTranslate), string(herald.HopNotify), string(herald.HopPublish),
	string(herald.HopConsume), string(herald.HopHandle), string(herald.HopDeadLetter), string(herald.HopDecide), string(herald.HopDeliver)}

func validHop(h string) bool {
	for _, x := range hops {
		if h == x {
			return true
		}
	}
	return false
}

func writeJSON(w io.Writer, recs []trace.Record) error {
	enc := json.NewEncoder(w)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}
