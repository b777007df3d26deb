// Package natsjs is herald's NATS JetStream transport: an implementation of
// broker.Broker that stores integration and notification events in JetStream
// streams and hands them to durable pull consumers.
//
// # Embedded or external
//
// [Embedded] starts a nats-server inside the process, with JetStream file
// storage in a data directory ([WithDataDir], or a temporary directory that
// Close removes with [WithEphemeral]). By default it opens no TCP port: the
// broker talks to it through an in-process connection. [WithListen] opens a
// client port (for the nats CLI or other processes); [Broker.URL] returns it.
// Use it for a single-node deployment, for development and for tests.
//
// [Connect] talks to an external server or cluster. It reconnects forever
// and supports user/password, token, NKey seed file, credentials file and
// TLS. Use [WithReplicas] to replicate the streams in a cluster (see
// Clusters below).
//
// # Durability
//
// A Publish returns nil for an event once JetStream acknowledged it, that is
// once it is in the stream. Whether it is also on disk depends on the
// server's sync setting. The embedded server fsyncs every [WithSyncInterval]
// (default 1s) and reports that window through [Broker.LossWindow]: an
// acknowledged event survives the process dying (the operating system has
// it), and if the machine dies the events of the last window are re-published
// by herald from the services' outboxes, which keep published rows for an
// hour and whose own commits are fsynced. The broker drops the re-published
// events it still has by their ids; the inboxes drop the rest.
// [WithSyncAlways](true) instead fsyncs every write before acknowledging it —
// durable on its own, for users of this package without herald's outbox.
// Publish then sends each batch as one JetStream atomic batch
// ([WithAtomicBatches]), which the server stores whole or not at all and
// covers with one fsync, instead of one fsync per message. In a cluster with three replicas, acknowledged writes are on
// a quorum of nodes. An external server's sync setting is the server's own
// configuration (jetstream { sync_interval: always }), so WithSyncAlways is
// rejected by Connect and LossWindow is 0.
//
// Delivery is at least once. Acks are confirmed by the server (Delivery.Ack
// waits for it), but JetStream writes a consumer's ack state to disk
// asynchronously (about every 100 ms) even with SyncAlways, so after a crash
// of the server the events acked in its last moments are delivered again.
// The tests show it: after kill -9 of an external server, every unacked
// event is delivered, and some recently acked ones again. herald's inbox
// deduplicates them.
//
// # Clusters
//
// With [Connect] to the URLs of a JetStream cluster and [WithReplicas](3),
// every stream and consumer is replicated on three servers, and the
// cluster's own Raft groups elect their leaders; the broker never
// coordinates anything itself. Two moments need care:
//
// A cluster that has just started, or lost its meta leader, answers
// JetStream requests late or not at all (a server without a meta leader
// stays silent for its first seconds), or says "JetStream system
// temporarily unavailable", "no suitable peers for placement" or
// "insufficient resources" while its peers join. Connect's check that
// JetStream is available, Provision, ProvisionTrace and the creation of the
// catalog's buckets retry such failures, each request bounded on its own
// (1 s growing to 5 s), with exponential backoff and jitter, logging each
// retry with its error and the next delay, for up to [WithStartupRetry]
// (default 1 minute) or the caller's context. Any other error — an invalid
// configuration, replicas a single server cannot have, JetStream not
// enabled — fails at once.
//
// When a stream's leader dies, the events it had not acknowledged get no
// answer. The broker subscribes to the advisories the cluster sends when
// one of its streams elects a leader
// ($JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream>), and fails those
// publishes at the election with an error wrapping broker.ErrTransient,
// instead of after the publish timeout ([WithPublishTimeout], 30 s); the
// outbox relay sends them again to the new leader, which drops the ones
// already stored by their Nats-Msg-Id. A publish whose connection drops
// fails at once (nats.go fails what awaits an acknowledgement on a
// reconnect). After such a failure, or an election, Publish sends one event
// alone until the stream stores it — again at the election, or every
// 250 ms, for at most the publish timeout — before it pipelines the rest,
// so that no later event of a batch reaches a new leader before an earlier
// one. nats-server elects a new leader 4 to 9 s after the last heartbeat of
// the old one (its Raft timeouts are fixed): that is the stall of a leader's
// crash; the flow resumes within milliseconds of the election. A server
// that refuses the advisories' subscription (a user without permission for
// $JS.EVENT.>) leaves only the wait: those publishes time out.
//
// Consume likewise follows its consumer's leader elections
// ($JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.<stream>.<consumer>): at each
// it pulls again from the new leader at once, and [Broker.Epoch] counts it,
// because deliveries on the wire when the old leader died come back only
// after their ack wait, as after a reconnect; herald holds newer events of
// the subscription back meanwhile.
//
// # Subjects and streams
//
// With the default prefix "herald" (see [WithPrefix]):
//
//	herald.int.<type>            integration events      stream HERALD_INT
//	herald.rpl.int.<consumer>    replays to one integration subscription (HERALD_INT)
//	herald.int.<p>.<type>        the same with WithPartitions(N), N > 1: stream HERALD_INT_<p>
//	herald.rpl.int.<p>.<consumer>                        (HERALD_INT_<p>), p = 0..N-1
//	herald.ntf.<type>            notification events     stream HERALD_NTF
//	herald.rpl.ntf.<consumer>    replays to one notification subscription (HERALD_NTF)
//	herald.dlq.<service>.<sub>   dead letters (JSON)     stream HERALD_DLQ, 14 days
//
// Domain events never travel on the broker: publishing one is an error.
// Event types are dotted names of lower-case letters, digits, '-' and '_'
// ("shop.order.confirmed").
//
// A JetStream consumer reads exactly one stream, so a replay subject lives in
// the stream of the subscription's kind and carries the kind in its name.
// <consumer> is the durable consumer name of the subscription, derived from
// the service and subscription names (see [ConsumerName]); being one token it
// cannot be confused between two subscriptions.
//
// Provision creates or updates the streams (file storage, limits
// retention, [WithMaxAge] for events, 14 days for dead letters, a duplicate
// window of [WithDuplicateWindow]) and one durable pull consumer per
// subscription, filtered on the subjects of its event types plus its own
// replay subject, with explicit acks, unlimited deliveries (herald decides
// when to give up) and the subscription's AckWait and MaxAckPending. Provision
// is idempotent and may run in several processes at once. Publish and Consume
// never create streams or consumers.
//
// Publish deduplicates by envelope ID (the Nats-Msg-Id header) within the
// duplicate window. Replay publishes with a fresh message ID so that the
// window does not swallow it.
//
// # Partitions
//
// [WithPartitions](N) spreads integration events over N partitions by
// their partition key (envelope.Envelope.Key, herald.KeyBy):
// p = [PartitionOf](key, N), the 32-bit FNV-1a hash of the key's bytes
// modulo N — a wire contract, other languages compute the same. Keyless
// events are in partition 0, with no order promised among them beyond the
// partition's. Each partition is a stream of its own, HERALD_INT_<p>, so
// that on a cluster the partitions' Raft leaders spread over the nodes; an
// event goes to herald.int.<p>.<type>, a replay of it to
// herald.rpl.int.<p>.<consumer>, and an integration subscription has one
// durable consumer per partition, <consumer>_p<p>. With N = 1 (the default)
// the names are those of a system from before partitions: HERALD_INT,
// herald.int.<type>, herald.rpl.int.<consumer>, <consumer>. Notifications
// and dead letters stay on one stream each: a notification subscription has
// one partition, 0, whatever N is ([Broker.Partitions] counts the
// integration partitions). A Subscription names the partition it consumes
// (broker.Subscription.Partition); Consume, Pending and PendingState refuse
// one out of range.
//
// The streams carry metadata herald.partitions=N and herald.partition=p.
// N is fixed when the streams are first provisioned: Provision refuses a
// broker whose N differs from the existing streams' (it looks at HERALD_INT
// and HERALD_INT_0), with an error wrapping [ErrPartitionMismatch] that
// names both counts. There is no online migration. To change N:
//
//  1. stop the relays of every service (their outboxes keep the new events);
//  2. let the consumers drain: every consumer of the old streams shows
//     NumPending = 0 and NumAckPending = 0 (nats consumer report);
//  3. stop every service, and back up (nats stream backup) then delete the
//     old integration streams — their subjects overlap the new ones', which
//     JetStream refuses — dropping their consumers;
//  4. start every service with the new WithPartitions: Provision creates the
//     new streams and consumers, and the relays publish on.
//
// # Claims
//
// Each partition of an integration subscription (also the one partition
// with N = 1) is consumed by one Consume call at a time, among all the
// instances of the service: its durable consumer is pinned_client with
// priority group "herald" and a pinned TTL of [WithPinnedTTL] (default 2 s),
// the JetStream priority groups of ADR-42. The server delivers to the
// pinned pull only and stamps its pin id (Nats-Pin-Id) on each message;
// the other pulls wait as standbys. Pulls expire at half the TTL, so an
// idle holder keeps its pin. The pin moves when its pulls stop for the TTL
// (a dead instance), when it is unpinned (a release), or when the consumer
// elects a leader. Notification subscriptions are not claimed: their
// Consume calls compete. [Broker.ClaimsInOrder] tells which (broker.Claimer).
//
// A Consume that receives a pin id it does not hold has gained the
// partition: it drops what it buffered, unhandled, checks with the server
// that the pin is the consumer's, resets the consumer (delivery restarts at
// the ack floor + 1, nothing pending, the pin kept) and pulls again with a
// new pull subscription, so nothing sent before reaches its handler. It
// does the same when its connection came back while it held the pin. So
// the events the previous holder handled but did not acknowledge come
// again first, in stream order, before newer ones, without waiting out
// their ack wait; herald's inbox absorbs the repeats. A reset restarts the
// delivery count: NumDelivered is 1 again for those events. A dead
// instance's partitions move within the pinned TTL (1.7 s measured with
// 2 s); a Consume that returns, or a Close, waits at most 2 s for what it
// handed out to be settled and unpins, so that a standby takes over within
// milliseconds.
//
// With several partitions, each Broker also balances the partitions of the
// subscriptions it consumes among the instances of their service, counted
// from the heartbeats in <PREFIX>_INSTANCES (see balance.go): an instance
// below its share (⌊N/instances⌋, at least 1) pulls every partition as a
// standby and says so on <prefix>.claim.<consumer>; one above it, having
// heard that, releases one partition every few seconds; one at its share
// pulls only what it holds, and any partition that no client holds (a dead
// instance's, while its heartbeat still counts). Claims gained and released
// are logged at Info with the consumer, partition and reason.
package natsjs
