package natsjs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testwait"
)

func TestManifestStore(t *testing.T) {
	ctx := context.Background()
	b, err := natsjs.Embedded(ctx, natsjs.WithEphemeral(), natsjs.WithInstanceTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var ms broker.ManifestStore = b

	// Nothing stored yet: empty, not an error.
	if got, err := ms.Manifests(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Manifests before any put: %v, %v", got, err)
	}
	if got, err := ms.Instances(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Instances before any heartbeat: %v, %v", got, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ms.PutManifest(ctx, "orders", []byte(`{"service":"orders","v":1}`)))
	must(ms.PutManifest(ctx, "orders", []byte(`{"service":"orders","v":2}`)))
	must(ms.PutManifest(ctx, "shipping", []byte(`{"service":"shipping"}`)))
	must(ms.Heartbeat(ctx, "orders", "i1", []byte(`{"id":"i1"}`)))
	must(ms.Heartbeat(ctx, "orders", "i2", []byte(`{"id":"i2"}`)))
	must(ms.Heartbeat(ctx, "shipping", "i3", []byte(`{"id":"i3"}`)))

	got, err := ms.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["orders"]) != `{"service":"orders","v":2}` {
		t.Fatalf("manifests: %q", got)
	}
	insts, err := ms.Instances(ctx)
	if err != nil || len(insts) != 3 {
		t.Fatalf("instances: %+v, %v", insts, err)
	}

	must(ms.Withdraw(ctx, "orders", "i1"))
	must(ms.DeleteManifest(ctx, "shipping"))
	got, _ = ms.Manifests(ctx)
	insts, _ = ms.Instances(ctx)
	if len(got) != 1 || len(insts) != 1 || insts[0].Service != "orders" || insts[0].Instance != "i2" {
		t.Fatalf("after withdraw and delete: manifests %q, instances %+v", got, insts)
	}

	// An instance that stops heartbeating (a crash) expires after the TTL.
	_ = testwait.For(20*time.Second, "the instances to expire", func() bool {
		if insts, err = ms.Instances(ctx); err != nil {
			t.Fatal(err)
		}
		return len(insts) == 0
	})
	if len(insts) != 0 {
		t.Fatalf("instances %+v still live 20s after their last heartbeat with a 1s TTL", insts)
	}
	if got, _ = ms.Manifests(ctx); len(got) != 1 {
		t.Fatalf("the manifest expired with its instances: %q", got)
	}

	if err := ms.PutManifest(ctx, "bad name", nil); !errors.Is(err, natsjs.ErrInvalidOption) {
		t.Errorf("PutManifest with a space in the name: %v", err)
	}
	b.Close()
	if err := ms.PutManifest(ctx, "orders", nil); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("PutManifest after Close: %v", err)
	}
}
