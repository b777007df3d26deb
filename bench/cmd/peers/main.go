// Command peers is the bench module's side of `herald bench`: it measures a
// peer system on a nats-server that herald bench started and prints its
// result as JSON, or draws the chart of a run's results.
//
//	peers run --scenario bus --system watermill-default --nats URL --events 50000
//	peers chart --in results.json --out docs/benchmarks.png
//
// herald bench builds and runs it; running it by hand is for debugging.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald/internal/benchrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

// errUsage is returned for a command line peers does not understand.
var errUsage = errors.New("usage: peers run --scenario bus --system NAME --nats URL --events N | peers chart --in FILE --out FILE.png")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "run":
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(stderr)
		scenario := fs.String("scenario", "bus", "the scenario (bus)")
		system := fs.String("system", "", "the system: watermill-default or watermill-tuned")
		url := fs.String("nats", "", "the nats-server URL")
		events := fs.Int("events", 50000, "how many events to move")
		quiet := fs.Bool("quiet", false, "no progress bar")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *scenario != "bus" {
			return fmt.Errorf("scenario %q: the peers run in bus only", *scenario)
		}
		if *url == "" || *events < 1 {
			return fmt.Errorf("--nats %q --events %d: want a URL and at least one event", *url, *events)
		}
		var progress io.Writer = stderr
		if *quiet {
			progress = nil
		}
		var tuned bool
		switch *system {
		case "watermill-default":
		case "watermill-tuned":
			tuned = true
		default:
			return fmt.Errorf("--system %q: want watermill-default or watermill-tuned", *system)
		}
		res, err := watermillBus(ctx, *system, *url, *events, tuned, progress)
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(res)
	case "chart":
		fs := flag.NewFlagSet("chart", flag.ContinueOnError)
		fs.SetOutput(stderr)
		in := fs.String("in", "", "the results (JSON, as herald bench --json writes them)")
		out := fs.String("out", "", "the PNG to write")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *in == "" || *out == "" {
			return errUsage
		}
		b, err := os.ReadFile(*in)
		if err != nil {
			return err
		}
		var results []benchrun.Result
		if err := json.Unmarshal(b, &results); err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		return chart(results, *out)
	default:
		return errUsage
	}
}
