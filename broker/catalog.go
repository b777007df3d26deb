package broker

import (
	"context"
	"time"
)

// ManifestStore is implemented by transports that can keep the services'
// manifests (what each service records, publishes, subscribes to and
// notifies; see package catalog) where `herald catalog` reads them. A service
// puts its manifest when it starts and announces each running instance with
// a heartbeat; an instance that stops withdraws, one that dies expires after
// InstanceTTL, so a service whose instances are all gone shows as stale.
// Manifests and instances are opaque JSON to the transport.
type ManifestStore interface {
	// PutManifest stores service's manifest, replacing the previous one.
	PutManifest(ctx context.Context, service string, manifest []byte) error
	// DeleteManifest removes service's manifest and its instances (a
	// service retired for good).
	DeleteManifest(ctx context.Context, service string) error
	// Manifests returns every stored manifest by service name.
	Manifests(ctx context.Context) (map[string][]byte, error)
	// Heartbeat records that instance of service is alive; it expires
	// InstanceTTL after the last heartbeat.
	Heartbeat(ctx context.Context, service, instance string, info []byte) error
	// Withdraw removes instance of service at once (a clean stop).
	Withdraw(ctx context.Context, service, instance string) error
	// Instances returns the live instances of every service.
	Instances(ctx context.Context) ([]InstanceRecord, error)
	// InstanceTTL is how long an instance lives without a heartbeat.
	InstanceTTL() time.Duration
}

// InstanceRecord is one live instance as a ManifestStore keeps it.
type InstanceRecord struct {
	Service  string
	Instance string
	Info     []byte
	Updated  time.Time
}
