package herald

import "fmt"

// One option mechanism serves every call that takes options, in the style
// of nats.go's jetstream: each call takes options of its own interface type,
// and an option is a value whose type implements the interface of every
// call it fits. An option that fits several calls is one name accepted by
// each of them (Retry by New and by Subscribe and Receive; Emits by
// Subscribe, Receive and Handle); passing an option to a call it does not
// fit is a compile error. Options validate their arguments when the call
// applies them, and the call reports the first one that is wrong.
//
//	New                               Option
//	Domain, Integration, Notification ContractOption
//	Subscribe, Receive                SubscribeOption
//	Handle                            HandleOption
//	Service.ReplayDeadLetters         ReplayOption
//	Service.Do                        DoOption
//	Aggregate                         AggregateOption

// Option configures a Service: New takes it.
type Option interface {
	applyService(*config) error
}

// ContractOption configures a contract: Domain, Integration and
// Notification take it.
type ContractOption interface {
	applyContract(*contractBase) error
}

// SubscribeOption tunes one subscription: Subscribe and Receive take it.
type SubscribeOption interface {
	applySubscribe(*subConfig) error
}

// HandleOption tunes one domain handler: Handle takes it.
type HandleOption interface {
	applyHandle(*handleConfig) error
}

// ReplayOption tunes Service.ReplayDeadLetters.
type ReplayOption interface {
	applyReplay(*replayConfig) error
}

// DoOption tunes one Service.Do.
type DoOption interface {
	applyDo(*doConfig) error
}

type doConfig struct {
	conflictRetries int
}

type doOption func(*doConfig) error

func (f doOption) applyDo(c *doConfig) error { return f(c) }

// RetryConflicts makes Do run its function again, in a new transaction, up
// to n more times when the transaction fails with ErrConcurrencyConflict
// (another transaction appended to an aggregate it loaded), so that the
// decision is taken again on the new state. Do returns the last conflict
// when they are all used up.
func RetryConflicts(n int) DoOption {
	return doOption(func(c *doConfig) error {
		if n < 0 {
			return fmt.Errorf("%w: RetryConflicts(%d) < 0", ErrInvalidOption, n)
		}
		c.conflictRetries = n
		return nil
	})
}

type replayConfig struct {
	dryRun bool
}

// DryRun makes ReplayDeadLetters only return the dead letters it would
// replay, changing nothing.
func DryRun() ReplayOption {
	return replayOption(func(c *replayConfig) error {
		c.dryRun = true
		return nil
	})
}

// The options that fit one call only are functions of these types.
type (
	serviceOption   func(*config) error
	contractOption  func(*contractBase) error
	subscribeOption func(*subConfig) error
	handleOption    func(*handleConfig) error
	replayOption    func(*replayConfig) error
)

func (f serviceOption) applyService(c *config) error         { return f(c) }
func (f contractOption) applyContract(c *contractBase) error { return f(c) }
func (f subscribeOption) applySubscribe(c *subConfig) error  { return f(c) }
func (f replayOption) applyReplay(c *replayConfig) error     { return f(c) }
func (f handleOption) applyHandle(c *handleConfig) error     { return f(c) }

// RetryOption is the option Retry returns. It fits New, where it sets the
// default retry policy of the service's subscriptions, and Subscribe and
// Receive, where it overrides that default for one subscription.
type RetryOption struct{ policy RetryPolicy }

// Retry sets a retry policy: passed to New, the default of every
// subscription of the service (default: 5 attempts, from 100ms to 30s);
// passed to Subscribe or Receive, that subscription's own.
func Retry(p RetryPolicy) RetryOption { return RetryOption{policy: p} }

func (o RetryOption) applyService(c *config) error {
	if err := o.policy.validate(); err != nil {
		return err
	}
	c.retry = o.policy
	return nil
}

func (o RetryOption) applySubscribe(c *subConfig) error {
	if err := o.policy.validate(); err != nil {
		return err
	}
	c.retry = o.policy
	return nil
}

// EmitsOption is the option Emits returns. It fits Subscribe and Receive
// (what a subscription's handler records and notifies) and Handle (what a
// domain handler records and notifies).
type EmitsOption struct{ contracts []Contract }

// Emits declares what a handler records (domain events) and notifies
// (notification events), so that the catalog can follow a chain of events
// across services (`herald catalog why`): a handler's effects are code,
// which herald cannot see. Subscribe, Receive and Handle take it, and
// register the contracts on the service too. It is optional; undeclared
// effects work the same but the catalog's chains stop at the handler.
//
//	herald.Subscribe(svc, contract.OrderConfirmedV1, "schedule-shipment", schedule,
//		herald.Emits(shipmentScheduled))
func Emits(cs ...Contract) EmitsOption { return EmitsOption{contracts: cs} }

func (o EmitsOption) applySubscribe(c *subConfig) error {
	if err := checkEmits(o.contracts); err != nil {
		return err
	}
	c.emits = append(c.emits, o.contracts...)
	return nil
}

func (o EmitsOption) applyHandle(c *handleConfig) error {
	if err := checkEmits(o.contracts); err != nil {
		return err
	}
	c.emits = append(c.emits, o.contracts...)
	return nil
}
