package benchrun

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
)

// runDurable measures the bus (herald on SQLite) with the durability
// mechanism on — the embedded server fsyncs every second and services refill
// it from their outbox at start (the default) — beside off (no fsync during
// the run: a 2-minute sync interval) and beside the strict alternative, an
// fsync per write (sync-always, at most a fifth of the events), with raw
// nats.go on that server as its baseline.
func runDurable(ctx context.Context, r *runner) error {
	variants := []struct {
		system string
		n      int
		raw    bool // raw nats.go instead of herald
		opts   []natsjs.Option
	}{
		{"durability-off", r.cfg.Events, false, []natsjs.Option{natsjs.WithSyncInterval(2 * time.Minute)}},
		{"durability-on", r.cfg.Events, false, nil},
		{"sync-always", max(1, r.cfg.Events/5), false, []natsjs.Option{natsjs.WithSyncAlways(true)}},
		{"raw-nats.go-sync-always", max(1, r.cfg.Events/5), true, []natsjs.Option{natsjs.WithSyncAlways(true)}},
	}
	for _, v := range variants {
		if !r.wants(v.system) {
			continue
		}
		dir, err := r.subdir("nats-" + v.system)
		if err != nil {
			return err
		}
		opts := append(append(r.cfg.logOpts(), natsjs.WithDataDir(dir)), v.opts...)
		if v.raw {
			opts = append(opts, natsjs.WithListen("127.0.0.1:0"))
		}
		br, err := natsjs.Embedded(ctx, opts...)
		if err != nil {
			return fmt.Errorf("%s: embedded nats-server: %w", v.system, err)
		}
		var res Result
		if v.raw {
			res, err = r.rawNATS(ctx, "durable", v.system, br.URL(), v.n)
		} else {
			res, err = r.heraldBus(ctx, "durable", v.system, SQLite, br, v.n)
		}
		br.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", v.system, err)
		}
		if v.system == "durability-off" {
			res.Baseline = true
		}
		r.add(res)
	}
	return nil
}
