// Package faultrig is the rig of the fault tests (faults_test.go in the
// root): a producer process, a consumer process and an external nats-server
// that the tests SIGKILL at random moments while 10,000 events flow, and the
// checks that judge every guarantee from the consumer's own tables (never
// from herald's counters): every event has exactly one effect, nothing is
// missing, and each key's events took effect in order.
//
// Producers and consumers run as subprocesses of the test binary: Rig.Spawn
// runs the binary's TestFaultRole, selected by the RoleEnv variable, which
// calls RunProducer or RunConsumer, so that they can be SIGKILLed; the
// broker is a real nats-server built from the version go.mod pins
// (internal/natsserver). Two test hooks at the transport seam
// (broker.Broker), not in herald, widen the windows a kill must hit:
//   - SlowBroker delays each relay Publish a little before and after the
//     broker call, as a slow network would, so that commits pile up in the
//     outbox unpublished (commit → publish) and events sit in the broker
//     before the relay marks them (publish → mark);
//   - Probe lets each ack reach the broker late (AckNoWait is allowed to
//     lose acks: that is its contract), so that a kill finds committed but
//     unacknowledged events (commit → ack); it also reports every
//     redelivered event whose effect a previous process already committed
//     (NumDelivered > 1, or a delivery after a claim's reset at the ack floor),
//     which proves the inbox absorbed it.
//
// The same wrappers tell the broker-restart test when to kill the server:
// as an event arrives at the consumer, and as the relay starts a batch.
package faultrig
