package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// Broker is the NATS JetStream transport. It implements broker.Broker and is
// safe for concurrent use. Create it with Embedded or Connect and release it
// with Close.
type Broker struct {
	cfg   config
	log   *slog.Logger
	names names

	srv     *server.Server // nil for an external server
	tempDir string         // removed by Close (WithEphemeral)
	url     string

	nc         *nats.Conn
	js         jetstream.JetStream
	connClosed chan struct{} // closed by the connection's ClosedHandler

	// replayTargets caches the consumers Replay has found: durable name ->
	// stream.
	replayTargets sync.Map
	// buckets caches the catalog's key-value buckets: name -> KeyValue.
	buckets sync.Map
	// watches follows the leadership of the event and dead-letter streams
	// (leader.go): stream name -> watch. Read-only after newBroker.
	watches map[string]*streamWatch
	// leaderMoves counts the leader elections of the consumers that Consume
	// reads (part of Epoch).
	leaderMoves atomic.Uint64
	// acks keeps each consumer's last acks, to send again after a
	// reconnect: durable name -> *ackLog.
	acks sync.Map

	// balancers balances the partitions of each subscription consumed
	// (balance.go): ConsumerName -> *balancer, under balMu; bg counts their
	// goroutines.
	balMu     sync.Mutex
	balancers map[string]*balancer
	bg        sync.WaitGroup

	mu       sync.Mutex
	isClosed atomic.Bool
	closed   chan struct{}  // closed when Close starts
	active   sync.WaitGroup // Publish, Consume, Provision... in progress
	baseCtx  context.Context
	cancel   context.CancelFunc
	closeErr error
	doneOnce sync.Once
}

var (
	_ broker.Broker      = (*Broker)(nil)
	_ broker.Partitioner = (*Broker)(nil)
)

// Partitions is the number of partitions of integration events,
// WithPartitions. It implements broker.Partitioner. Notification
// subscriptions have one partition whatever it is (their events are on one
// stream): consume them as partition 0.
func (b *Broker) Partitions() int { return b.names.partitions }

// Partition returns PartitionOf(key, Partitions()): the partition of the
// integration events of partition key key. It implements
// broker.Partitioner.
func (b *Broker) Partition(key string) int { return PartitionOf(key, b.names.partitions) }

// Embedded starts an in-process nats-server with JetStream file storage and
// connects to it in-process. It needs WithDataDir or WithEphemeral. The
// server listens on no TCP port unless WithListen is given (the broker's own
// connection stays in-process even then), and fsyncs every WithSyncInterval
// unless WithSyncAlways(true) is given. ctx bounds the start-up.
func Embedded(ctx context.Context, opts ...Option) (*Broker, error) {
	cfg := defaultConfig(modeEmbedded)
	if err := cfg.apply(opts); err != nil {
		return nil, err
	}
	b := newBroker(cfg)
	dir := cfg.dataDir
	if cfg.ephemeral {
		d, err := os.MkdirTemp("", "herald-natsjs-*")
		if err != nil {
			return nil, fmt.Errorf("herald/natsjs: temporary data directory: %w", err)
		}
		dir, b.tempDir = d, d
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("herald/natsjs: data directory: %w", err)
	}

	sopts := &server.Options{
		ServerName:         "herald-embedded",
		JetStream:          true,
		StoreDir:           dir,
		JetStreamMaxMemory: cfg.maxMemory,
		JetStreamMaxStore:  cfg.maxStore,
		SyncAlways:         cfg.syncAlways,
		SyncInterval:       syncInterval(cfg),
		NoSigs:             true,
		DontListen:         cfg.listen == "",
		MaxPayload:         cfg.maxPayload, // 0: the server's default
	}
	if cfg.listen != "" {
		sopts.Host = cfg.host
		sopts.Port = cfg.port
		if cfg.port == 0 {
			sopts.Port = server.RANDOM_PORT
		}
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		b.removeTemp()
		return nil, fmt.Errorf("herald/natsjs: embedded server: %w", err)
	}
	srvLog := cfg.logger.With("component", "nats-server")
	fatal := make(chan string, 1)
	debug := cfg.serverLog <= slog.LevelDebug && srvLog.Enabled(ctx, slog.LevelDebug)
	srv.SetLoggerV2(serverLogger{l: srvLog, min: cfg.serverLog, fatal: fatal}, debug, false, false)
	srv.Start()
	b.srv = srv
	wait := defaultServerStartupWait
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = max(time.Until(dl), time.Millisecond)
	}
	if err := waitReady(srv, wait, fatal); err != nil {
		b.stopServer()
		return nil, err
	}
	if !srv.JetStreamEnabled() {
		b.stopServer()
		return nil, errors.New("herald/natsjs: embedded server started without JetStream (see its log)")
	}
	if cfg.listen != "" {
		b.url = srv.ClientURL()
	}

	nopts := b.commonConnOptions()
	nopts = append(nopts, nats.InProcessServer(srv), nats.NoReconnect())
	nc, err := nats.Connect("", nopts...)
	if err != nil {
		b.stopServer()
		return nil, fmt.Errorf("herald/natsjs: connect to embedded server: %w", err)
	}
	if err := b.start(ctx, nc); err != nil {
		b.stopServer()
		return nil, err
	}
	b.log.Debug("herald/natsjs: embedded server ready", "dir", dir, "sync_always", cfg.syncAlways, "url", b.url)
	return b, nil
}

// Connect connects to an external NATS server or cluster with JetStream
// enabled. urls are tried in random order ("nats://host:4222",
// "tls://host:4222"). Once connected, the connection reconnects forever
// (publishes fail while it does, unless WithReconnectBuffer).
//
// The first connection tries every URL; when none accepts it, Connect logs
// the cause (connection refused, no such host, a timeout, an authorization
// error) at Warn and tries again every WithReconnectWait until it succeeds or
// ctx ends, then fails with the last cause. With WithConnectRetry(false) it
// fails at once with the cause instead, the choice of a command-line tool.
// Connected, it waits until JetStream answers — retrying while a cluster
// elects its meta leader, see WithStartupRetry — or ctx ends.
func Connect(ctx context.Context, urls []string, opts ...Option) (*Broker, error) {
	cfg := defaultConfig(modeExternal)
	if err := cfg.apply(opts); err != nil {
		return nil, err
	}
	if len(urls) == 0 {
		return nil, invalid("Connect: empty URL list")
	}
	for _, u := range urls {
		if err := validURL(u); err != nil {
			return nil, invalid("Connect: URL %q: %v", u, err)
		}
	}
	b := newBroker(cfg)
	nopts := b.commonConnOptions()
	nopts = append(nopts,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.reconnectWait),
		nats.ReconnectBufSize(cfg.reconnectBuffer),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil && !b.isClosed.Load() {
				b.log.Warn("herald/natsjs: disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("herald/natsjs: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	)
	if cfg.user != "" {
		nopts = append(nopts, nats.UserInfo(cfg.user, cfg.password))
	}
	if cfg.token != "" {
		nopts = append(nopts, nats.Token(cfg.token))
	}
	if cfg.nkeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.nkeySeedFile)
		if err != nil {
			return nil, invalid("WithNKeySeedFile: %v", err)
		}
		nopts = append(nopts, o)
	}
	if cfg.credsFile != "" {
		nopts = append(nopts, nats.UserCredentials(cfg.credsFile))
	}
	if len(cfg.rootCAs) > 0 {
		nopts = append(nopts, nats.RootCAs(cfg.rootCAs...))
	}
	if cfg.certFile != "" {
		nopts = append(nopts, nats.ClientCert(cfg.certFile, cfg.keyFile))
	}
	if cfg.tlsConfig != nil {
		nopts = append(nopts, nats.Secure(cfg.tlsConfig))
	}

	nc, err := b.firstConnect(ctx, urls, nopts)
	if err != nil {
		return nil, err
	}
	if err := b.start(ctx, nc); err != nil {
		return nil, err
	}
	return b, nil
}

// waitReady waits for the embedded server to accept connections, and
// returns at once with the server's fatal error (a client port already in
// use, say) when it has one.
func waitReady(srv *server.Server, wait time.Duration, fatal <-chan string) error {
	deadline := time.Now().Add(wait)
	for {
		select {
		case msg := <-fatal:
			return fmt.Errorf("herald/natsjs: embedded server failed: %s", msg)
		default:
		}
		if srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("herald/natsjs: embedded server not ready after %v", wait)
		}
	}
}

func validURL(s string) error {
	if s == "" || strings.ContainsAny(s, ", \t\r\n") {
		return errors.New("empty, or contains a comma or space")
	}
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("scheme %q, want nats, tls, ws or wss", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

func waitConnected(ctx context.Context, nc *nats.Conn) error {
	ch := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(ch)
	for {
		switch nc.Status() {
		case nats.CONNECTED:
			return nil
		case nats.CLOSED:
			return fmt.Errorf("herald/natsjs: connect: connection closed: %w", nc.LastError())
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if err := nc.LastError(); err != nil {
				return fmt.Errorf("herald/natsjs: connect: %w (last error: %w)", ctx.Err(), err)
			}
			return fmt.Errorf("herald/natsjs: connect: %w", ctx.Err())
		}
	}
}

func newBroker(cfg config) *Broker {
	b := &Broker{
		cfg:        cfg,
		log:        cfg.logger,
		names:      newNames(cfg.prefix, cfg.partitions),
		closed:     make(chan struct{}),
		connClosed: make(chan struct{}),
	}
	b.watches = map[string]*streamWatch{
		b.names.ntfStream: newStreamWatch(),
		b.names.dlqStream: newStreamWatch(),
	}
	for _, s := range b.names.intStreams() {
		b.watches[s] = newStreamWatch()
	}
	b.baseCtx, b.cancel = context.WithCancel(context.Background())
	return b
}

func (b *Broker) commonConnOptions() []nats.Option {
	name := b.cfg.name
	if name == "" {
		name = "herald"
	}
	return []nats.Option{
		nats.Name(name),
		nats.DrainTimeout(b.cfg.drainTimeout),
		nats.ClosedHandler(func(*nats.Conn) { close(b.connClosed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			b.log.Warn("herald/natsjs: asynchronous connection error", "subject", subj, "err", err)
		}),
	}
}

// start creates the JetStream context on nc and checks that JetStream is
// available. It closes nc on failure.
func (b *Broker) start(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(b.cfg.maxInFlight),
		jetstream.WithPublishAsyncTimeout(b.cfg.publishTimeout),
	)
	if err != nil {
		nc.Close()
		return fmt.Errorf("herald/natsjs: jetstream: %w", err)
	}
	b.nc = nc
	// A cluster that has just started answers only once it has elected its
	// meta leader.
	if err := b.retryStartup(ctx, "check JetStream", func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	}); err != nil {
		nc.Close()
		return fmt.Errorf("herald/natsjs: jetstream not available: %w", err)
	}
	if err := b.watchStreams(nc); err != nil {
		nc.Close()
		return err
	}
	b.js = js
	return nil
}

func syncInterval(cfg config) time.Duration {
	if cfg.syncAlways {
		return 0
	}
	return cfg.syncInterval
}

// LossWindow is how long an acknowledged event may stay only in the
// operating system's cache: the embedded server's sync interval, or 0 with
// WithSyncAlways(true) and for external servers (whose durability is their
// own configuration). herald re-publishes the outbox rows published in that
// window when a service starts, which makes the embedded default durable
// against the machine dying. It implements broker.LossWindower.
func (b *Broker) LossWindow() time.Duration {
	if b.srv == nil {
		return 0
	}
	return syncInterval(b.cfg)
}

// Epoch counts the connection's reconnects and the leader elections of the
// consumers that Consume reads: after either, deliveries that were on the
// wire come back only after their ack wait. It implements broker.Resumer.
// It reads the connection's own counter, which changes before any message
// arrives on the new connection; an election is counted as its advisory
// arrives, before Consume pulls from the new leader.
func (b *Broker) Epoch() uint64 { return b.nc.Stats().Reconnects + b.leaderMoves.Load() }

// ConnectedServer returns the name of the server the connection is on now
// (as a stream's cluster info names its leader), "" while disconnected.
func (b *Broker) ConnectedServer() string { return b.nc.ConnectedServerName() }

// URL returns the client URL of the embedded server when it listens
// (WithListen), and "" otherwise.
func (b *Broker) URL() string { return b.url }

// enter registers a call in progress; it fails with ErrClosed once Close has
// started. Every successful enter must be paired with b.active.Done().
func (b *Broker) enter() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed.Load() {
		return errClosed
	}
	b.active.Add(1)
	return nil
}

var errClosed = fmt.Errorf("herald/natsjs: %w", broker.ErrClosed)

// Close stops the broker: running Consume calls return ErrClosed (their
// handlers' context is cancelled and Close waits for them), publishes in
// flight finish, the connection is drained and an embedded server is shut
// down; an ephemeral data directory is removed. Close is idempotent; every
// later call on the broker fails with an error wrapping broker.ErrClosed.
func (b *Broker) Close() error {
	b.doneOnce.Do(func() {
		b.mu.Lock()
		b.isClosed.Store(true)
		close(b.closed)
		b.mu.Unlock()
		b.cancel()

		waited := make(chan struct{})
		go func() { b.active.Wait(); b.bg.Wait(); close(waited) }()
		timer := time.NewTimer(b.cfg.drainTimeout)
		defer timer.Stop()
		select {
		case <-waited:
		case <-timer.C:
			b.log.Warn("herald/natsjs: Close: calls still running after the drain timeout; closing anyway",
				"timeout", b.cfg.drainTimeout)
		}

		var errs []error
		if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("herald/natsjs: drain: %w", err))
			b.nc.Close()
		}
		select {
		case <-b.connClosed:
		case <-time.After(b.cfg.drainTimeout + time.Second):
			b.nc.Close()
		}
		b.stopServer()
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// stopServer shuts an embedded server down, waits for it and removes an
// ephemeral data directory.
func (b *Broker) stopServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	b.removeTemp()
}

func (b *Broker) removeTemp() {
	if b.tempDir != "" {
		if err := os.RemoveAll(b.tempDir); err != nil {
			b.log.Warn("herald/natsjs: remove temporary data directory", "dir", b.tempDir, "err", err)
		}
	}
}
