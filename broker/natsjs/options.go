package natsjs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrInvalidOption is wrapped by every error that reports a bad option or a
// bad argument to Embedded or Connect.
var ErrInvalidOption = errors.New("herald/natsjs: invalid option")

// Defaults of the options.
const (
	DefaultPrefix            = "herald"
	DefaultReplicas          = 1
	DefaultPartitions        = 1
	MaxPartitions            = 256
	DefaultPinnedTTL         = 2 * time.Second
	DefaultMaxInFlight       = 4096
	DefaultDuplicateWindow   = 2 * time.Minute
	DefaultMaxAge            = 7 * 24 * time.Hour
	DefaultDeadLetterMaxAge  = 14 * 24 * time.Hour
	DefaultPublishTimeout    = 30 * time.Second
	DefaultMaxMemory         = 256 << 20 // 256 MiB
	DefaultMaxStore          = 8 << 30   // 8 GiB
	DefaultReconnectBuffer   = -1        // no buffer: publishes fail while disconnected, keeping order
	DefaultReconnectWait     = 2 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultSyncInterval      = time.Second      // embedded server, unless WithSyncAlways(true)
	DefaultServerLogLevel    = slog.LevelWarn   // the embedded server's lines below it are dropped
	DefaultSubscriptionAck   = 30 * time.Second // AckWait of a Subscription that sets none
	DefaultMaxAckPending     = 1024             // MaxAckPending of a Subscription that sets none
	defaultServerStartupWait = 10 * time.Second
)

type mode int

const (
	modeEmbedded mode = iota + 1
	modeExternal
)

func (m mode) String() string {
	if m == modeEmbedded {
		return "Embedded"
	}
	return "Connect"
}

// Option configures Embedded or Connect. Each option validates its argument
// and fails with an error wrapping ErrInvalidOption; options that make sense
// for only one of the two constructors fail on the other.
type Option func(*config) error

type config struct {
	mode mode

	// shared
	prefix     string
	replicas   int
	partitions int
	pinnedTTL  time.Duration
	flaw       string // a deliberate defect, for the tests that must catch it (claim.go)
	// lose, set by tests, drops the messages it returns true for as they
	// reach a pull, as if lost on the wire.
	lose            func(jetstream.Msg) bool
	maxInFlight     int
	dupWindow       time.Duration
	maxAge          time.Duration
	dlqMaxAge       time.Duration
	publishTimeout  time.Duration
	startupRetry    time.Duration
	drainTimeout    time.Duration
	logger          *slog.Logger
	name            string
	reconnectBuffer int
	reconnectWait   time.Duration
	instanceTTL     time.Duration
	atomicBatches   bool
	atomicSet       bool
	traceStorage    TraceStorage
	traceStorageSet bool
	sourceRegion    string // WithSourceRegion: the JetStream domain sourced (regions.go)

	// embedded
	serverLog    slog.Level // the least level of the server's lines that are logged
	dataDir      string
	ephemeral    bool
	listen       string
	host         string
	port         int
	maxMemory    int64
	maxStore     int64
	maxPayload   int32
	syncAlways   bool
	syncSet      bool
	syncInterval time.Duration
	// syncIntervalSet records an explicit WithSyncInterval.
	syncIntervalSet bool

	// external
	user, password string
	token          string
	nkeySeedFile   string
	credsFile      string
	rootCAs        []string
	certFile       string
	keyFile        string
	tlsConfig      *tls.Config
	connectRetry   bool
}

func defaultConfig(m mode) config {
	return config{
		mode:            m,
		prefix:          DefaultPrefix,
		replicas:        DefaultReplicas,
		partitions:      DefaultPartitions,
		pinnedTTL:       DefaultPinnedTTL,
		maxInFlight:     DefaultMaxInFlight,
		dupWindow:       DefaultDuplicateWindow,
		maxAge:          DefaultMaxAge,
		dlqMaxAge:       DefaultDeadLetterMaxAge,
		publishTimeout:  DefaultPublishTimeout,
		startupRetry:    DefaultStartupRetry,
		drainTimeout:    DefaultDrainTimeout,
		maxMemory:       DefaultMaxMemory,
		maxStore:        DefaultMaxStore,
		syncInterval:    DefaultSyncInterval,
		reconnectBuffer: DefaultReconnectBuffer,
		reconnectWait:   DefaultReconnectWait,
		connectRetry:    true,
		serverLog:       DefaultServerLogLevel,
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

func (c *config) only(m mode, opt string) error {
	if c.mode != m {
		return invalid("%s is an option of %s, not %s", opt, m, c.mode)
	}
	return nil
}

func (c *config) apply(opts []Option) error {
	for _, o := range opts {
		if o == nil {
			return invalid("nil option")
		}
		if err := o(c); err != nil {
			return err
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if !c.atomicSet {
		c.atomicBatches = c.mode == modeEmbedded && c.syncAlways
	}
	if c.mode == modeEmbedded {
		switch {
		case c.dataDir == "" && !c.ephemeral:
			return invalid("Embedded needs WithDataDir or WithEphemeral")
		case c.dataDir != "" && c.ephemeral:
			return invalid("WithDataDir and WithEphemeral exclude each other")
		case c.replicas != 1:
			return invalid("WithReplicas(%d): the embedded server is a single node, replicas must be 1", c.replicas)
		case c.syncAlways && c.syncIntervalSet:
			return invalid("WithSyncInterval cannot be combined with WithSyncAlways(true)")
		}
	}
	return nil
}

// WithPrefix sets the first subject token(s) and the stream name prefix
// (default "herald"): subjects <prefix>.int.<type>, streams <PREFIX>_INT. It
// is made of letters, digits, '-' and '_', optionally dotted.
func WithPrefix(prefix string) Option {
	return func(c *config) error {
		if err := validPrefix(prefix); err != nil {
			return invalid("WithPrefix(%q): %v", prefix, err)
		}
		c.prefix = prefix
		return nil
	}
}

// WithInstanceTTL sets how long a service instance counts as live in the
// catalog after its last heartbeat (default DefaultInstanceTTL); services
// heartbeat three times per TTL.
func WithInstanceTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Second {
			return invalid("WithInstanceTTL(%v): want at least 1s", d)
		}
		c.instanceTTL = d
		return nil
	}
}

// WithReplicas sets the number of replicas of every stream (1 to 5, default
// 1). Values above 1 need a JetStream cluster, so Embedded rejects them.
func WithReplicas(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 5 {
			return invalid("WithReplicas(%d): want 1 to 5", n)
		}
		c.replicas = n
		return nil
	}
}

// WithPartitions sets the number of partitions integration events are
// spread over (1 to MaxPartitions, default 1), by PartitionOf their
// partition key. Each partition is a stream of its own (so that, on a
// cluster, the partitions' leaders spread over the nodes) and each
// subscription has a durable consumer per partition, held by one instance
// of the service at a time. The count is fixed when the streams are first
// provisioned: every service of a system must use the same one, and
// Provision refuses a different one, naming both.
func WithPartitions(n int) Option {
	return func(c *config) error {
		if n < 1 || n > MaxPartitions {
			return invalid("WithPartitions(%d): want 1 to %d", n, MaxPartitions)
		}
		c.partitions = n
		return nil
	}
}

// WithPinnedTTL sets how long a partition stays with an instance that
// stopped pulling it (default DefaultPinnedTTL): after a crash, the
// partitions of the dead instance move to the others within about this
// time. It must be at least 2s: pulls are renewed at half of it, and a pull
// lasts at least 1s.
func WithPinnedTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < 2*time.Second {
			return invalid("WithPinnedTTL(%v): want at least 2s (pulls are renewed at half of it, and nats.go pulls for at least 1s)", d)
		}
		c.pinnedTTL = d
		return nil
	}
}

// WithMaxInFlight bounds the asynchronous publishes awaiting their
// acknowledgement, over all concurrent Publish calls (default 4096).
func WithMaxInFlight(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("WithMaxInFlight(%d): want at least 1", n)
		}
		c.maxInFlight = n
		return nil
	}
}

// WithDuplicateWindow sets how long the streams remember message IDs to drop
// re-published events (default 2 minutes).
func WithDuplicateWindow(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("WithDuplicateWindow(%v): want a positive duration", d)
		}
		c.dupWindow = d
		return nil
	}
}

// WithMaxAge sets how long integration and notification events are kept in
// their streams (default 7 days). It bounds how far back a new subscription
// or an operator's replay can reach.
func WithMaxAge(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("WithMaxAge(%v): want a positive duration", d)
		}
		c.maxAge = d
		return nil
	}
}

// WithPublishTimeout bounds the wait for the acknowledgement of one published
// event, and the wait for room in the in-flight window (default 30 s). An
// event that times out fails with an error wrapping broker.ErrTransient.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("WithPublishTimeout(%v): want a positive duration", d)
		}
		c.publishTimeout = d
		return nil
	}
}

// WithStartupRetry bounds how long the calls that set the broker up keep
// retrying failures that go away by themselves (default 1 minute): a
// cluster that has just started, or lost its leader, answers late or not at
// all, or says it is temporarily unavailable, until it has elected its
// leaders. They are Connect's check that JetStream is available, Provision,
// ProvisionTrace and the creation of the catalog's buckets; each retry is
// logged with its error and the next delay. The caller's context bounds them
// too. A permanent error (an invalid configuration, JetStream not enabled)
// fails at once.
func WithStartupRetry(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return invalid("WithStartupRetry(%v): want a duration >= 0 (0: no retries)", d)
		}
		c.startupRetry = d
		return nil
	}
}

// WithDrainTimeout bounds how long Close waits for running Consume calls and
// for the connection to drain (default 30 s).
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return invalid("WithDrainTimeout(%v): want a positive duration", d)
		}
		c.drainTimeout = d
		return nil
	}
}

// WithLogger sets the logger of the broker and, for Embedded, of the
// nats-server (default slog.Default()); the server's lines carry
// component=nats-server, and only those at WithServerLogLevel or above are
// logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return invalid("WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}

// WithServerLogLevel sets the least level of the embedded nats-server's
// lines that reach the logger (default DefaultServerLogLevel, slog.LevelWarn:
// its warnings and errors). The server's notices — some two dozen lines of
// banner and settings at start, four at shutdown — are at slog.LevelInfo,
// its debug lines at slog.LevelDebug; the logger's own level applies too.
// A command's --verbose flag is the place for slog.LevelInfo. Embedded only.
func WithServerLogLevel(level slog.Level) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithServerLogLevel"); err != nil {
			return err
		}
		c.serverLog = level
		return nil
	}
}

// WithName sets the NATS connection name shown in server monitoring
// (default "herald").
func WithName(name string) Option {
	return func(c *config) error {
		if name == "" {
			return invalid("WithName: empty name")
		}
		c.name = name
		return nil
	}
}

// WithDataDir sets the directory of the embedded server's JetStream files.
// Embedded only; it is created if missing.
func WithDataDir(dir string) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithDataDir"); err != nil {
			return err
		}
		if dir == "" {
			return invalid("WithDataDir: empty directory")
		}
		c.dataDir = dir
		return nil
	}
}

// WithEphemeral stores the embedded server's data in a new temporary
// directory that Close removes. For tests and experiments. Embedded only.
func WithEphemeral() Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithEphemeral"); err != nil {
			return err
		}
		c.ephemeral = true
		return nil
	}
}

// WithListen opens a client port on the embedded server, e.g.
// "127.0.0.1:4222" ("127.0.0.1:0" picks a free port); Broker.URL returns its
// URL. Without it the embedded server does not listen at all. Embedded only.
func WithListen(hostPort string) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithListen"); err != nil {
			return err
		}
		host, ps, err := net.SplitHostPort(hostPort)
		if err != nil {
			return invalid("WithListen(%q): %v", hostPort, err)
		}
		port, err := strconv.Atoi(ps)
		if err != nil || port < 0 || port > 65535 {
			return invalid("WithListen(%q): bad port", hostPort)
		}
		if host == "" {
			return invalid("WithListen(%q): give a host, e.g. 127.0.0.1", hostPort)
		}
		c.listen, c.host, c.port = hostPort, host, port
		return nil
	}
}

// WithMaxMemory bounds the embedded server's JetStream memory storage
// (default 256 MiB). Embedded only.
func WithMaxMemory(bytes int64) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithMaxMemory"); err != nil {
			return err
		}
		if bytes <= 0 {
			return invalid("WithMaxMemory(%d): want a positive size", bytes)
		}
		c.maxMemory = bytes
		return nil
	}
}

// WithMaxStore bounds the embedded server's JetStream file storage (default
// 8 GiB). Embedded only.
func WithMaxStore(bytes int64) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithMaxStore"); err != nil {
			return err
		}
		if bytes <= 0 {
			return invalid("WithMaxStore(%d): want a positive size", bytes)
		}
		c.maxStore = bytes
		return nil
	}
}

// WithMaxPayload sets the embedded server's max_payload: the largest
// message, headers included, it accepts (default 1 MiB, the nats-server
// default; at most 64 MiB). herald refuses larger events when they are
// recorded (see Broker.MaxEventSize, which never exceeds what the file store
// keeps as one message, just under 32 MiB). Embedded only: an external server's
// limit is its own configuration, which the broker learns when it connects.
func WithMaxPayload(bytes int) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithMaxPayload"); err != nil {
			return err
		}
		if bytes <= 0 || bytes > 64<<20 {
			return invalid("WithMaxPayload(%d): want 1 byte to 64 MiB", bytes)
		}
		c.maxPayload = int32(bytes)
		return nil
	}
}

// WithSyncAlways makes the embedded server fsync every write before it
// acknowledges it: an acknowledged event survives the machine dying without
// help from herald's outbox. Publish then sends atomic batches (see
// WithAtomicBatches), so one fsync covers a whole batch instead of one
// message. The default is false: the server fsyncs every WithSyncInterval
// (default 1s) and reports that window through LossWindow, and herald's outbox
// re-publishes what was published in it when the service starts again; see
// the package documentation. Embedded only: an external server's sync policy
// is its own configuration.
func WithSyncAlways(always bool) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithSyncAlways"); err != nil {
			return err
		}
		c.syncAlways, c.syncSet = always, true
		return nil
	}
}

// WithAtomicBatches makes Publish send each batch of events as one JetStream
// atomic batch (NATS Server 2.12 or later, on streams that allow atomic
// publishing: Provision enables it): the server stores the whole batch or
// none of it and, when it syncs always, covers the batch with one fsync
// instead of one per event. A batch the server refuses as a batch (one of
// its events is a duplicate, the batch is too large, atomic publishing was
// turned off) is sent again event by event. The default is on for an
// embedded server with WithSyncAlways(true) — where it is what makes durable
// publishing fast — and off otherwise: without per-event fsyncs the server's
// staging of a batch costs more than it saves.
func WithAtomicBatches(on bool) Option {
	return func(c *config) error {
		c.atomicBatches, c.atomicSet = on, true
		return nil
	}
}

// WithSyncInterval sets how often the embedded server fsyncs (default 1s)
// unless WithSyncAlways(true) is set. Embedded only.
func WithSyncInterval(d time.Duration) Option {
	return func(c *config) error {
		if err := c.only(modeEmbedded, "WithSyncInterval"); err != nil {
			return err
		}
		if d <= 0 {
			return invalid("WithSyncInterval(%v): want a positive duration", d)
		}
		c.syncInterval, c.syncIntervalSet = d, true
		return nil
	}
}

// WithUserPassword authenticates with a user and password. Connect only.
func WithUserPassword(user, password string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithUserPassword"); err != nil {
			return err
		}
		if user == "" {
			return invalid("WithUserPassword: empty user")
		}
		c.user, c.password = user, password
		return nil
	}
}

// WithToken authenticates with a token. Connect only.
func WithToken(token string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithToken"); err != nil {
			return err
		}
		if token == "" {
			return invalid("WithToken: empty token")
		}
		c.token = token
		return nil
	}
}

// WithNKeySeedFile authenticates with the NKey whose seed is in path.
// Connect only.
func WithNKeySeedFile(path string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithNKeySeedFile"); err != nil {
			return err
		}
		if err := readable(path); err != nil {
			return invalid("WithNKeySeedFile: %v", err)
		}
		c.nkeySeedFile = path
		return nil
	}
}

// WithCredsFile authenticates with a JWT credentials file (user JWT and NKey
// seed). Connect only.
func WithCredsFile(path string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithCredsFile"); err != nil {
			return err
		}
		if err := readable(path); err != nil {
			return invalid("WithCredsFile: %v", err)
		}
		c.credsFile = path
		return nil
	}
}

// WithRootCAs trusts the PEM certificate authorities in files for the
// server's TLS certificate. Connect only.
func WithRootCAs(files ...string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithRootCAs"); err != nil {
			return err
		}
		if len(files) == 0 {
			return invalid("WithRootCAs: no file")
		}
		for _, f := range files {
			if err := readable(f); err != nil {
				return invalid("WithRootCAs: %v", err)
			}
		}
		c.rootCAs = append(c.rootCAs, files...)
		return nil
	}
}

// WithClientCert presents a TLS client certificate (PEM files). Connect only.
func WithClientCert(certFile, keyFile string) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithClientCert"); err != nil {
			return err
		}
		for _, f := range []string{certFile, keyFile} {
			if err := readable(f); err != nil {
				return invalid("WithClientCert: %v", err)
			}
		}
		c.certFile, c.keyFile = certFile, keyFile
		return nil
	}
}

// WithTLSConfig uses cfg for the TLS connection. Connect only.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithTLSConfig"); err != nil {
			return err
		}
		if cfg == nil {
			return invalid("WithTLSConfig(nil)")
		}
		c.tlsConfig = cfg
		return nil
	}
}

// WithReconnectBuffer lets the connection buffer up to bytes of publishes
// while it reconnects (default: none). Off by default on purpose: when a
// server dies, the publishes already on the wire are lost while buffered
// later ones would be stored after reconnecting — an event would land after
// a later event of its key. Without the buffer a publish fails at once with
// broker.ErrTransient and the outbox relay retries in order. Connect only;
// the connection always reconnects forever.
func WithReconnectBuffer(bytes int) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithReconnectBuffer"); err != nil {
			return err
		}
		if bytes <= 0 {
			return invalid("WithReconnectBuffer(%d): want a positive size", bytes)
		}
		c.reconnectBuffer = bytes
		return nil
	}
}

// WithReconnectWait sets the pause between reconnect attempts to the same
// server (default 2 s). Connect only.
func WithReconnectWait(d time.Duration) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithReconnectWait"); err != nil {
			return err
		}
		if d <= 0 {
			return invalid("WithReconnectWait(%v): want a positive duration", d)
		}
		c.reconnectWait = d
		return nil
	}
}

// WithConnectRetry says what Connect does when no server accepts the first
// connection. With true, the default, it logs the cause at Warn and tries
// again every WithReconnectWait until it connects or its ctx ends: a service
// started before its broker waits for it. With false it fails at once with
// the cause (connection refused, no such host, ...): a command-line tool's
// user wants to hear why now. Once connected, the connection reconnects
// forever either way. Connect only.
func WithConnectRetry(retry bool) Option {
	return func(c *config) error {
		if err := c.only(modeExternal, "WithConnectRetry"); err != nil {
			return err
		}
		c.connectRetry = retry
		return nil
	}
}

func readable(path string) error {
	if path == "" {
		return errors.New("empty path")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}
