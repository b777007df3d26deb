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

// The trace stream's default limits: whichever is reached first drops the
// oldest records.
const (
	DefaultTraceMaxAge   = 24 * time.Hour
	DefaultTraceMaxBytes = 64 << 20 // 64 MiB
)

const tokTrace = "trace"

// traceStream names the stream that holds trace records.
func (n names) traceStream() string {
	return strings.ToUpper(strings.ReplaceAll(n.prefix, ".", "_")) + "_TRACE"
}

// TraceStorage is where the trace stream keeps its records
// (WithTraceStorage).
type TraceStorage int

const (
	// TraceInMemory keeps the records in the server's memory, the default:
	// a trace is a diagnostic, and they are lost when the server restarts.
	TraceInMemory TraceStorage = iota
	// TraceOnFile keeps them in the server's file store: they survive its
	// restarts (within the stream's limits). herald dev uses it.
	TraceOnFile
)

func (s TraceStorage) String() string {
	switch s {
	case TraceInMemory:
		return "memory"
	case TraceOnFile:
		return "file"
	}
	return fmt.Sprintf("TraceStorage(%d)", int(s))
}

func (s TraceStorage) jetstream() jetstream.StorageType {
	if s == TraceOnFile {
		return jetstream.FileStorage
	}
	return jetstream.MemoryStorage
}

// WithTraceStorage sets where ProvisionTrace creates the trace stream
// (default TraceInMemory). A stream's storage cannot change, so an existing
// trace stream keeps its own: the first process to create it decides.
func WithTraceStorage(s TraceStorage) Option {
	return func(c *config) error {
		if s != TraceInMemory && s != TraceOnFile {
			return invalid("WithTraceStorage(%d): want TraceInMemory or TraceOnFile", int(s))
		}
		c.traceStorage, c.traceStorageSet = s, true
		return nil
	}
}

// ProvisionTrace creates or updates the bounded stream of causal trace
// records, <PREFIX>_TRACE on subjects <prefix>.trace.<service>, oldest
// records dropped beyond maxAge or maxBytes (zero: the defaults). It creates
// the stream in memory, lost when the server restarts, unless
// WithTraceStorage(TraceOnFile); an existing stream keeps its storage. A
// trace.Recorder calls it when it starts, and again when an append finds
// the stream gone (a server restarted without it). It is idempotent.
func (b *Broker) ProvisionTrace(ctx context.Context, maxAge time.Duration, maxBytes int64) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	if maxAge < 0 || maxBytes < 0 {
		return fmt.Errorf("%w: trace stream limits must not be negative (max age %v, max bytes %d)", ErrInvalidOption, maxAge, maxBytes)
	}
	if maxAge == 0 {
		maxAge = DefaultTraceMaxAge
	}
	if maxBytes == 0 {
		maxBytes = DefaultTraceMaxBytes
	}
	ctx, stop := b.bind(ctx)
	defer stop()
	sc := jetstream.StreamConfig{
		Name:        b.names.traceStream(),
		Description: "herald causal trace records",
		Subjects:    []string{b.names.prefix + "." + tokTrace + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		Storage:     b.cfg.traceStorage.jetstream(),
		Replicas:    b.cfg.replicas,
	}
	err := b.retryStartup(ctx, "provision stream "+sc.Name, func(ctx context.Context) error {
		s, err := b.js.Stream(ctx, sc.Name)
		switch {
		case err == nil:
			if have := s.CachedInfo().Config.Storage; have != sc.Storage {
				if b.cfg.traceStorageSet {
					b.log.Warn("herald/natsjs: the trace stream exists on other storage, which cannot change; it keeps it",
						"stream", sc.Name, "storage", have.String(), "want", sc.Storage.String())
				}
				sc.Storage = have
			}
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			return err
		}
		_, err = b.js.CreateOrUpdateStream(ctx, sc)
		return err
	})
	if err != nil {
		return fmt.Errorf("herald/natsjs: provision stream %s: %w", sc.Name, err)
	}
	return nil
}

// AppendTrace stores one batch of encoded trace records of service on the
// trace stream and waits for the server to store it.
func (b *Broker) AppendTrace(ctx context.Context, service string, batch []byte) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	if err := validName("service", service); err != nil {
		return fmt.Errorf("herald/natsjs: append trace: %w", err)
	}
	ctx, stop := b.bind(ctx)
	defer stop()
	if _, err := b.js.Publish(ctx, b.names.prefix+"."+tokTrace+"."+safeToken(service), batch); err != nil {
		switch {
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			err = fmt.Errorf("%w (%w)", broker.ErrNotProvisioned, err)
		case reconnecting(err):
			err = fmt.Errorf("%w: %w", broker.ErrTransient, unreachable(err))
		}
		return fmt.Errorf("herald/natsjs: append trace of %s: %w", service, err)
	}
	return nil
}

// ReadTrace calls fn with every batch of trace records the stream holds now,
// oldest first, and returns when it has seen the last one, fn returns an
// error, or ctx ends.
func (b *Broker) ReadTrace(ctx context.Context, fn func(batch []byte) error) error {
	return b.readTrace(ctx, jetstream.DeliverAllPolicy, true, fn)
}

// FollowTrace calls fn with every batch of trace records stored from now on,
// until ctx ends (it then returns nil) or fn returns an error.
func (b *Broker) FollowTrace(ctx context.Context, fn func(batch []byte) error) error {
	return b.readTrace(ctx, jetstream.DeliverNewPolicy, false, fn)
}

func (b *Broker) readTrace(ctx context.Context, from jetstream.DeliverPolicy, stopAtEnd bool, fn func([]byte) error) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.active.Done()
	ctx, stop := b.bind(ctx)
	defer stop()
	name := b.names.traceStream()
	st, err := b.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("herald/natsjs: no trace stream %s on this server: %w (a trace.Recorder creates it when it starts, "+
			"and again when it next records after the stream was lost)", name, broker.ErrNotProvisioned)
	}
	if err != nil {
		return fmt.Errorf("herald/natsjs: trace stream %s: %w", name, err)
	}
	if stopAtEnd && st.CachedInfo().State.Msgs == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: from})
	if err != nil {
		return fmt.Errorf("herald/natsjs: read trace: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("herald/natsjs: read trace: %w", err)
	}
	defer it.Stop()
	unblock := context.AfterFunc(ctx, it.Stop)
	defer unblock()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				if stopAtEnd {
					return fmt.Errorf("herald/natsjs: read trace: %w", ctx.Err())
				}
				return nil
			}
			return fmt.Errorf("herald/natsjs: read trace: %w", err)
		}
		if err := fn(m.Data()); err != nil {
			return err
		}
		if stopAtEnd {
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				return nil
			}
		}
	}
}

// Lag returns how many events of sub the server has not yet delivered and
// how many are delivered but unacknowledged. It implements broker.LagReporter.
func (b *Broker) Lag(ctx context.Context, sub broker.Subscription) (broker.Lag, error) {
	if err := b.enter(); err != nil {
		return broker.Lag{}, err
	}
	defer b.active.Done()
	spec, err := b.consumerConfig(sub)
	if err != nil {
		return broker.Lag{}, fmt.Errorf("herald/natsjs: lag: %w", err)
	}
	cons, err := b.consumer(ctx, spec.stream, spec.cfg.Durable)
	if err != nil {
		return broker.Lag{}, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return broker.Lag{}, fmt.Errorf("herald/natsjs: lag %s/%s: %w", sub.Service, sub.Name, err)
	}
	return broker.Lag{Pending: int(info.NumPending), AckPending: info.NumAckPending}, nil
}

var _ broker.LagReporter = (*Broker)(nil)
