package natsserver_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/store/sqlite"
)

type ev struct{ I int }

func TestScratchStarvation(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d := herald.Domain[ev]("x.d")
	i := herald.Integration[ev]("x.i", herald.KeyBy(func(e ev) string { return "k" }))
	svc, _ := herald.New("orders", herald.WithStore(st), herald.WithBroker(b))
	herald.Translate(svc, d, i, func(ctx context.Context, e ev) (ev, error) { return e, nil })
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stop := time.Now().Add(4 * time.Second)
	go func() {
		for time.Now().Before(stop.Add(3 * time.Second)) {
			n, age, _ := svc.OutboxStats(ctx)
			t.Logf("backlog %d oldest %v", n, age.Round(time.Millisecond))
			time.Sleep(500 * time.Millisecond)
		}
	}()
	k := 0
	for time.Now().Before(stop) {
		svc.Do(ctx, func(tx herald.Tx) error { return herald.Record(tx, d, ev{k}) })
		k++
	}
	t.Logf("%d commits", k)
	time.Sleep(3 * time.Second)
}
