package trace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
)

// Sink is where a Recorder appends its batches: the broker's trace stream.
// natsjs.Broker implements it.
type Sink interface {
	// ProvisionTrace creates the bounded trace stream (zero limits: the
	// transport's defaults). Start calls it, and the writer again when an
	// append finds the stream gone.
	ProvisionTrace(ctx context.Context, maxAge time.Duration, maxBytes int64) error
	// AppendTrace stores one encoded batch of source's records. Its error
	// wraps broker.ErrNotProvisioned when the stream does not exist.
	AppendTrace(ctx context.Context, source string, batch []byte) error
}

// Config tunes a Recorder; the zero value of each field picks its default.
type Config struct {
	// Source names the process or service on whose subject the batches go
	// (required; letters, digits, '-' and '_').
	Source string
	// Buffer is how many records may wait for the writer (default 16384);
	// beyond that Observe drops records and counts them.
	Buffer int
	// BatchBytes is the size at which a batch is sent (default 64 KiB).
	BatchBytes int
	// FlushInterval is the longest a record waits in a partial batch
	// (default 100ms).
	FlushInterval time.Duration
	// MaxAge and MaxBytes bound the stream (defaults: the transport's).
	MaxAge   time.Duration
	MaxBytes int64
	// Logger receives the writer's failures (default slog.Default()).
	Logger *slog.Logger
}

// Recorder is a herald.Observer that appends a Record of every observation to
// the trace stream. Observe never blocks. Create it with NewRecorder, then
// Start it; Close flushes what is buffered. When an append finds the stream
// gone (the server restarted and lost it, or an operator deleted it) the
// writer creates it again, at most once a second (backing off to once a
// minute while that fails), and logs it at Warn.
type Recorder struct {
	sink Sink
	cfg  Config
	ch   chan Record

	dropped atomic.Uint64 // records Observe could not buffer
	lost    atomic.Uint64 // records in batches the sink refused

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
	syncReq chan chan struct{}
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("herald/trace: recorder closed")

// NewRecorder returns a recorder writing to sink.
func NewRecorder(sink Sink, cfg Config) (*Recorder, error) {
	if sink == nil {
		return nil, errors.New("herald/trace: nil sink")
	}
	if cfg.Source == "" {
		return nil, errors.New("herald/trace: Config.Source is required")
	}
	if cfg.Buffer < 0 || cfg.BatchBytes < 0 || cfg.FlushInterval < 0 || cfg.MaxAge < 0 || cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("herald/trace: negative setting in %+v", cfg)
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 16384
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = 64 << 10
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Recorder{sink: sink, cfg: cfg, ch: make(chan Record, cfg.Buffer), syncReq: make(chan chan struct{})}, nil
}

// Inline marks the recorder as an herald.InlineObserver: Observe never
// blocks, so herald calls it on the hot path instead of through a queue.
func (r *Recorder) Inline() {}

// Observe implements herald.Observer: it buffers the record of o, or drops
// and counts it when the buffer is full.
func (r *Recorder) Observe(_ context.Context, o herald.Observation) {
	select {
	case r.ch <- FromObservation(o):
	default:
		r.dropped.Add(1)
	}
}

// Dropped is the number of records Observe dropped because the buffer was
// full.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Lost is the number of records in batches the sink failed to store.
func (r *Recorder) Lost() uint64 { return r.lost.Load() }

// Start provisions the trace stream and starts the writer. ctx bounds the
// provisioning only; Close stops the writer.
func (r *Recorder) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return nil
	}
	if err := r.sink.ProvisionTrace(ctx, r.cfg.MaxAge, r.cfg.MaxBytes); err != nil {
		return fmt.Errorf("herald/trace: %w", err)
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.done, r.started = cancel, make(chan struct{}), true
	go r.write(wctx)
	return nil
}

// provision creates the trace stream again, for at most five seconds.
func (r *Recorder) provision(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return r.sink.ProvisionTrace(ctx, r.cfg.MaxAge, r.cfg.MaxBytes)
}

// Close stops the writer after it sent what was buffered (for at most five
// seconds). Records observed after Close are dropped.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	r.mu.Unlock()
	if !started {
		return nil
	}
	r.cancel()
	<-r.done
	if d, l := r.Dropped(), r.Lost(); d > 0 || l > 0 {
		r.cfg.Logger.Warn("herald/trace: records not kept", "source", r.cfg.Source, "dropped", d, "lost", l)
	}
	return nil
}

// Sync returns once the records observed before it was called are written
// (or failed to be, see Lost), or when ctx ends.
func (r *Recorder) Sync(ctx context.Context) error {
	r.mu.Lock()
	started, closed := r.started, r.closed
	r.mu.Unlock()
	if !started || closed {
		return ErrClosed
	}
	done := make(chan struct{})
	select {
	case r.syncReq <- done:
	case <-r.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Bounds of the writer's re-provisioning of a trace stream that is gone:
// at most one attempt per reprovisionMin, the wait doubling after each
// failed one up to reprovisionMax.
const (
	reprovisionMin = time.Second
	reprovisionMax = time.Minute
)

// write batches records until ctx ends, then flushes what is buffered.
func (r *Recorder) write(ctx context.Context) {
	defer close(r.done)
	buf := NewBatch(r.cfg.BatchBytes + 512)
	n := 0
	var nextProvision time.Time // no re-provisioning before
	provisionWait := reprovisionMin
	appendBatch := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return r.sink.AppendTrace(ctx, r.cfg.Source, buf)
	}
	flush := func(ctx context.Context) {
		if n == 0 {
			return
		}
		err := appendBatch(ctx)
		if errors.Is(err, broker.ErrNotProvisioned) && !time.Now().Before(nextProvision) {
			// The stream is gone: on a server that restarted, a stream in
			// memory is lost. Create it again, at most once per wait.
			if perr := r.provision(ctx); perr != nil {
				r.cfg.Logger.Warn("herald/trace: the trace stream is gone and cannot be created again; records are lost until it is",
					"source", r.cfg.Source, "err", perr, "retry_in", provisionWait)
				nextProvision = time.Now().Add(provisionWait)
				provisionWait = min(2*provisionWait, reprovisionMax)
			} else {
				r.cfg.Logger.Warn("herald/trace: the trace stream was gone; created it again", "source", r.cfg.Source)
				nextProvision, provisionWait = time.Now().Add(reprovisionMin), reprovisionMin
				err = appendBatch(ctx)
			}
		}
		if err != nil {
			r.lost.Add(uint64(n))
			r.cfg.Logger.Debug("herald/trace: append", "source", r.cfg.Source, "records", n, "err", err)
		}
		buf, n = buf[:1], 0
	}
	tick := time.NewTicker(r.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case rec := <-r.ch:
			buf = AppendRecord(buf, rec)
			n++
			if len(buf) >= r.cfg.BatchBytes {
				flush(ctx)
			}
		case <-tick.C:
			flush(ctx)
		case done := <-r.syncReq:
			for k := len(r.ch); k > 0; k-- {
				buf = AppendRecord(buf, <-r.ch)
				if n++; len(buf) >= r.cfg.BatchBytes {
					flush(ctx)
				}
			}
			flush(ctx)
			close(done)
		case <-ctx.Done():
			final := context.WithoutCancel(ctx)
			for {
				select {
				case rec := <-r.ch:
					buf = AppendRecord(buf, rec)
					if n++; len(buf) >= r.cfg.BatchBytes {
						flush(final)
					}
				default:
					flush(final)
					return
				}
			}
		}
	}
}
