package benchrun

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
)

// latencyBuckets are the latency histogram's bounds.
var latencyBuckets = []time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond,
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
}

// runLatency records events at a fixed rate for a fixed time on the
// embedded defaults (SQLite, in-process JetStream) and reports the latency
// from each event's scheduled time to its handler. Each tick's due events go
// in one transaction; a late tick carries more events (the schedule, not
// the last commit, starts each event's clock, so a stall shows up in the
// latency instead of lowering the rate). The producer stops a second after
// the end of the duration: if it fell further behind, the events still due
// are not sent, and Result.Offered tells how many the schedule had.
func runLatency(ctx context.Context, r *runner) error {
	rate, dur, tick := r.cfg.Rate, r.cfg.Duration, r.cfg.Tick
	n := int(float64(rate) * dur.Seconds())
	if n <= 0 {
		return fmt.Errorf("rate %d for %v is no event", rate, dur)
	}
	system := fmt.Sprintf("herald-sqlite@%s/s", Human(float64(rate)))
	if !r.wants(system) {
		return nil
	}
	res := Result{Scenario: "latency", System: system}
	br, err := natsjs.Embedded(ctx, append(r.cfg.logOpts(), natsjs.WithEphemeral())...)
	if err != nil {
		return err
	}
	defer br.Close()
	bar := r.progress(system, n)
	defer bar.Done()
	cnt := newCounter(n, bar)
	lat := NewLatencies(n)
	p, err := r.newPipeline(ctx, pipelineSpec{
		name: "latency", dialect: SQLite, broker: br,
		handle: func(_ context.Context, _ herald.Tx, e Event) error {
			lat.Add(time.Since(time.Unix(0, e.SentNS)))
			cnt.inc()
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer p.close()
	for _, s := range []*herald.Service{p.cons, p.prod} {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	blob := Blob()
	per := time.Second / time.Duration(rate)
	m := StartMeter()
	t0 := time.Now()
	sent, txs := 0, 0
	tk := time.NewTicker(tick)
	defer tk.Stop()
	end := t0.Add(dur + time.Second)
	for sent < n && time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
		}
		due := min(n, int(time.Since(t0)/per))
		if due <= sent {
			continue
		}
		if err := p.prod.Do(ctx, func(tx herald.Tx) error {
			for i := sent; i < due; i++ {
				e := Event{Key: "k" + strconv.Itoa(i%keys), Seq: i, SentNS: t0.Add(time.Duration(i) * per).UnixNano(), Blob: blob}
				if err := herald.Record(tx, p.recorded, e); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		sent = due
		txs++
	}
	cnt.setTarget(sent)
	if err := waitFor(ctx, cnt.done, 2*time.Minute, func() string { return fmt.Sprintf("%d of %d handled", cnt.count(), sent) }); err != nil {
		return err
	}
	m.Stop(&res, sent)
	res.Offered = n
	lat.Fill(&res, latencyBuckets)
	res.Note = fmt.Sprintf("%d events/s for %v, %d transactions (%.1f events each); latency from the scheduled time", rate, dur, txs, float64(sent)/float64(max(1, txs)))
	if sent < n {
		res.Note += fmt.Sprintf("; the producer fell behind: %d of %d scheduled events sent", sent, n)
	}
	r.add(res)
	return nil
}
