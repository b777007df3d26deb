package natsjs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/broker"
)

// In a cluster a stream is written by its leader only. When the leader dies
// (SIGKILL, a crash, a network split), the publishes it had not yet
// acknowledged get no answer: without more, each would wait out the publish
// timeout (30 s by default) though the cluster elects a new leader within
// seconds. So the broker follows the leadership of its streams through the
// advisories the cluster sends when a stream elects a leader
// ($JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream>): at each, the
// publishes to that stream still waiting for their acknowledgement fail
// with broker.ErrTransient and are sent again, to the new leader (the
// stream drops the copies it already stored by their Nats-Msg-Id).
//
// While a stream has no leader, or after a publish to it failed, a Publish
// first sends one event alone and waits for it to be stored before sending
// the rest: pipelined events reaching the cluster just as a new leader takes
// over could otherwise be stored behind later ones of the batch. That one
// event is sent again until the stream stores it — at once when a leader is
// elected, else every probePause — for at most the publish timeout.

// errLeaderChanged fails a publish in flight when its stream elects a new
// leader.
var errLeaderChanged = errors.New("the stream elected a new leader before acknowledging the event")

// streamWatch follows one stream's leadership for the publishers.
type streamWatch struct {
	mu        sync.Mutex
	changed   chan struct{} // closed at the stream's next leader election
	epoch     uint64        // counts elections
	unsettled bool          // probe before pipelining (see above)
}

func newStreamWatch() *streamWatch { return &streamWatch{changed: make(chan struct{})} }

// current returns the channel closed at the next election and the count of
// elections so far.
func (w *streamWatch) current() (<-chan struct{}, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed, w.epoch
}

// elected records a leader election.
func (w *streamWatch) elected() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.epoch++
	w.unsettled = true
}

// unsettle records a failed publish.
func (w *streamWatch) unsettle() {
	w.mu.Lock()
	w.unsettled = true
	w.mu.Unlock()
}

// settle records that the stream stored an event sent at epoch: it is
// settled unless it elected a leader since.
func (w *streamWatch) settle(epoch uint64) {
	w.mu.Lock()
	if w.epoch == epoch {
		w.unsettled = false
	}
	w.mu.Unlock()
}

func (w *streamWatch) isUnsettled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unsettled
}

// watchStreams subscribes to the leader-election advisories of the event
// and dead-letter streams. A server that refuses the subscription (a user
// without permission for $JS.EVENT.>) only costs the early failure of
// publishes in flight to a lost leader: they time out instead.
func (b *Broker) watchStreams(nc *nats.Conn) error {
	for name := range b.watches {
		if _, err := nc.Subscribe(server.JSAdvisoryStreamLeaderElectedPre+"."+name, b.onStreamLeader); err != nil {
			return fmt.Errorf("herald/natsjs: subscribe to the leader elections of %s: %w", name, err)
		}
	}
	return nil
}

func (b *Broker) onStreamLeader(m *nats.Msg) {
	name := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	w := b.watches[name]
	if w == nil {
		return
	}
	var adv struct {
		Leader string `json:"leader"`
	}
	_ = json.Unmarshal(m.Data, &adv)
	w.elected()
	b.log.Info("herald/natsjs: stream elected a leader; its publishes awaiting an acknowledgement are sent again",
		"stream", name, "leader", adv.Leader)
}

// watch returns the watch of the stream of an event, or nil.
func (b *Broker) watch(stream string) *streamWatch { return b.watches[stream] }

// leaderErr is the error of a publish of id whose stream elected a leader
// before acknowledging it.
func leaderErr(id, stream string) error {
	return fmt.Errorf("herald/natsjs: publish %s: %w: stream %s: %w", id, broker.ErrTransient, stream, errLeaderChanged)
}
