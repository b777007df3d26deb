package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

var _ broker.ManifestStore = (*Broker)(nil)

// DefaultInstanceTTL is how long a service instance counts as live after
// its last heartbeat (WithInstanceTTL).
const DefaultInstanceTTL = 30 * time.Second

// Bucket names: <PREFIX>_MANIFESTS (one key per service, kept until
// deleted) and <PREFIX>_INSTANCES (one key per running instance,
// "<service>.<instance>", expiring after the instance TTL).
func (n names) manifestBucket() string {
	return n.intStream[:len(n.intStream)-len("_INT")] + "_MANIFESTS"
}
func (n names) instanceBucket() string {
	return n.intStream[:len(n.intStream)-len("_INT")] + "_INSTANCES"
}

// kv returns the bucket, creating it if create is set; without create a
// missing bucket is (nil, nil).
func (b *Broker) kv(ctx context.Context, instances, create bool) (jetstream.KeyValue, error) {
	name := b.names.manifestBucket()
	cfg := jetstream.KeyValueConfig{Bucket: name, Description: "herald: service manifests (herald catalog)",
		History: 1, Storage: jetstream.FileStorage, Replicas: b.cfg.replicas}
	if instances {
		name = b.names.instanceBucket()
		cfg = jetstream.KeyValueConfig{Bucket: name, Description: "herald: live service instances (herald catalog)",
			History: 1, Storage: jetstream.FileStorage, Replicas: b.cfg.replicas, TTL: b.InstanceTTL()}
	}
	if kv, ok := b.buckets.Load(name); ok {
		return kv.(jetstream.KeyValue), nil
	}
	var kv jetstream.KeyValue
	var err error
	if create {
		err = b.retryStartup(ctx, "create bucket "+name, func(ctx context.Context) error {
			var err error
			kv, err = b.js.CreateOrUpdateKeyValue(ctx, cfg)
			return err
		})
	} else if kv, err = b.js.KeyValue(ctx, name); errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b.buckets.Store(name, kv)
	return kv, nil
}

// kvCall runs fn with a bucket while the broker is open.
func (b *Broker) kvCall(ctx context.Context, op string, instances, create bool, fn func(ctx context.Context, kv jetstream.KeyValue) error) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	ctx, cancel := b.bind(ctx)
	defer cancel()
	kv, err := b.kv(ctx, instances, create)
	if err == nil && kv != nil {
		if err = fn(ctx, kv); err != nil {
			// The bucket may be gone (deleted by an operator): look it up
			// (or create it) again next time.
			b.buckets.Delete(kv.Bucket())
		}
	}
	if reconnecting(err) {
		return fmt.Errorf("herald/natsjs: %s: %w: %w", op, broker.ErrTransient, unreachable(err))
	}
	if err != nil {
		return fmt.Errorf("herald/natsjs: %s: %w", op, err)
	}
	return nil
}

func manifestKey(service string) (string, error) {
	if err := validName("service", service); err != nil {
		return "", err
	}
	return safeToken(service), nil
}

// PutManifest stores service's manifest in the manifests bucket.
func (b *Broker) PutManifest(ctx context.Context, service string, manifest []byte) error {
	key, err := manifestKey(service)
	if err != nil {
		return invalid("PutManifest: %v", err)
	}
	return b.kvCall(ctx, "put manifest of "+service, false, true, func(ctx context.Context, kv jetstream.KeyValue) error {
		_, err := kv.Put(ctx, key, manifest)
		return err
	})
}

// DeleteManifest removes service's manifest and its instances.
func (b *Broker) DeleteManifest(ctx context.Context, service string) error {
	key, err := manifestKey(service)
	if err != nil {
		return invalid("DeleteManifest: %v", err)
	}
	err = b.kvCall(ctx, "delete manifest of "+service, false, false, func(ctx context.Context, kv jetstream.KeyValue) error {
		return kv.Purge(ctx, key)
	})
	if err != nil {
		return err
	}
	return b.kvCall(ctx, "delete instances of "+service, true, false, func(ctx context.Context, kv jetstream.KeyValue) error {
		keys, err := kv.Keys(ctx)
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		for _, k := range keys {
			if strings.HasPrefix(k, key+".") {
				if err := kv.Purge(ctx, k); err != nil {
					return err
				}
			}
		}
		return err
	})
}

// Manifests returns every stored manifest by service key.
func (b *Broker) Manifests(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := b.kvCall(ctx, "list manifests", false, false, func(ctx context.Context, kv jetstream.KeyValue) error {
		return eachEntry(ctx, kv, func(e jetstream.KeyValueEntry) { out[e.Key()] = e.Value() })
	})
	return out, err
}

// Heartbeat records that instance of service is alive.
func (b *Broker) Heartbeat(ctx context.Context, service, instance string, info []byte) error {
	key, err := manifestKey(service)
	if err == nil {
		err = validName("instance", instance)
	}
	if err != nil {
		return invalid("Heartbeat: %v", err)
	}
	return b.kvCall(ctx, "heartbeat of "+service, true, true, func(ctx context.Context, kv jetstream.KeyValue) error {
		_, err := kv.Put(ctx, key+"."+safeToken(instance), info)
		return err
	})
}

// Withdraw removes instance of service.
func (b *Broker) Withdraw(ctx context.Context, service, instance string) error {
	key, err := manifestKey(service)
	if err != nil {
		return invalid("Withdraw: %v", err)
	}
	return b.kvCall(ctx, "withdraw an instance of "+service, true, false, func(ctx context.Context, kv jetstream.KeyValue) error {
		return kv.Purge(ctx, key+"."+safeToken(instance))
	})
}

// Instances returns the live instances of every service.
func (b *Broker) Instances(ctx context.Context) ([]broker.InstanceRecord, error) {
	var out []broker.InstanceRecord
	err := b.kvCall(ctx, "list instances", true, false, func(ctx context.Context, kv jetstream.KeyValue) error {
		return eachEntry(ctx, kv, func(e jetstream.KeyValueEntry) {
			service, instance, ok := strings.Cut(e.Key(), ".")
			if ok {
				out = append(out, broker.InstanceRecord{Service: service, Instance: instance, Info: e.Value(), Updated: e.Created()})
			}
		})
	})
	return out, err
}

// InstanceTTL is how long an instance lives without a heartbeat.
func (b *Broker) InstanceTTL() time.Duration {
	if b.cfg.instanceTTL > 0 {
		return b.cfg.instanceTTL
	}
	return DefaultInstanceTTL
}

// eachEntry calls fn for the current value of every key.
func eachEntry(ctx context.Context, kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry)) error {
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted or expired meanwhile
		}
		if err != nil {
			return err
		}
		fn(e)
	}
	return nil
}
