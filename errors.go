package herald

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// Sentinel errors, testable with errors.Is. The errors herald returns wrap
// one of these and name the contract, service or state involved.
var (
	// ErrInvalidContract: a contract's name, version or options are malformed.
	ErrInvalidContract = errors.New("herald: invalid contract")
	// ErrDuplicateContract: another contract already has this name and version.
	ErrDuplicateContract = errors.New("herald: duplicate contract")
	// ErrKindMismatch: a name is already registered with another kind.
	ErrKindMismatch = errors.New("herald: contract kind mismatch")
	// ErrUnregistered: the contract is not registered on this service.
	ErrUnregistered = errors.New("herald: contract not registered")
	// ErrNoTx: a call that needs a transaction got none.
	ErrNoTx = errors.New("herald: no transaction")
	// ErrTxDone: the transaction has already committed or rolled back.
	ErrTxDone = errors.New("herald: transaction already finished")
	// ErrEncode: event data could not be encoded.
	ErrEncode = errors.New("herald: cannot encode event data")
	// ErrNilContext: a nil context.Context was passed.
	ErrNilContext = errors.New("herald: nil context")
	// ErrClosed: the service has been closed.
	ErrClosed = errors.New("herald: service closed")
	// ErrInvalidOption: an option has a bad value.
	ErrInvalidOption = errors.New("herald: invalid option")
	// ErrPanic: a handler panicked; the error carries the stack.
	ErrPanic = errors.New("herald: handler panicked")
	// ErrTooDeep: handlers recording events recursed too deeply.
	ErrTooDeep = errors.New("herald: event recursion too deep")
	// ErrStarted: the call is only allowed before Start.
	ErrStarted = errors.New("herald: service already started")
	// ErrInvalidAggregate: an aggregate's declaration, or a stream id, is
	// malformed.
	ErrInvalidAggregate = errors.New("herald: invalid aggregate")
	// ErrConcurrencyConflict: another transaction appended to an
	// aggregate's stream after this one loaded it (its expected version was
	// taken). Do runs the transaction again with RetryConflicts.
	ErrConcurrencyConflict = errors.New("herald: concurrency conflict")
	// ErrNoApply: an event of an aggregate's stream, loaded or appended,
	// has no apply function in the aggregate (herald.Apply).
	ErrNoApply = errors.New("herald: no apply function for event")
	// ErrCorruptSnapshot: an aggregate's snapshot does not decode into its
	// state type (of the snapshot's schema version: bump SnapshotSchema).
	ErrCorruptSnapshot = errors.New("herald: snapshot does not decode")
	// ErrCorruptStream: an event of an aggregate's stream does not decode,
	// or the stream has a gap.
	ErrCorruptStream = errors.New("herald: corrupt aggregate stream")
)

// PanicError is the error a recovered panic becomes.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("herald: handler panicked: %v\n%s", e.Value, e.Stack)
}

// Unwrap makes errors.Is(err, ErrPanic) true, and reaches a panicked error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}

// recovered turns a recover() value into a *PanicError (nil for nil).
func recovered(v any) error {
	if v == nil {
		return nil
	}
	return &PanicError{Value: v, Stack: debug.Stack()}
}

// permanent marks an error that retrying will not fix.
type permanent struct{ err error }

func (p permanent) Error() string { return "permanent: " + p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that herald does not retry it: a subscription
// dead-letters the event at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}
