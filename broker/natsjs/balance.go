package natsjs

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/heraldhq/herald/broker"
)

// Balancing. With several partitions, the server alone would leave every
// partition with whichever instance's pull came first — often all with
// one. So each Broker balances the partitions of each subscription it
// consumes, by a rule every instance applies on its own (no coordinator):
//
//   - I = the live instances of the service, counted from the heartbeats in
//     <PREFIX>_INSTANCES (keys <service>.<instance>; none counts as 1);
//     lo = max(⌊N/I⌋, 1).
//   - An instance holding fewer than lo partitions pulls every partition it
//     does not hold, as a standby; one holding lo or more pulls only those
//     it holds — and any whose consumer shows no pinned client (an orphan:
//     a dead instance's, whose heartbeat still counts for up to its TTL).
//   - An instance holding fewer than lo says so every look, on the core
//     NATS subject <prefix>.claim.<consumer> (no stream keeps it).
//   - An instance holding more than lo that heard another say so in the
//     last few seconds releases one partition, at most one every few
//     seconds, with jitter: it stops pulling it, waits (at most 2 s) for
//     what it handed out to be settled, unpins it, and stays off it for
//     twice the pinned TTL, so that a waiting standby takes it. Without
//     such a word it keeps what it holds: the partitions it took from a
//     dead instance whose heartbeat still counts have no one else to go
//     to. (The consumer's NumWaiting cannot tell: the holder's own pulls
//     overlap, and a dead instance's wait until they expire.)
//
// An instance under lo thus draws partitions from those above it, and an
// instance that dies leaves its partitions to whoever pulls them after the
// pinned TTL. The state lives in the Broker, per (service, subscription);
// its goroutine stops when the last Consume of the subscription returns.

// command is what the balancer tells a Consume.
type command int

const (
	cmdPull    command = iota + 1 // pull the partition (a standby, if not held)
	cmdIdle                       // stop pulling the partition (not held)
	cmdRelease                    // release the held partition
)

// Timings of the balancer.
const (
	balanceEvery    = time.Second     // a look at the claims, ±20 %
	instancesEvery  = 2 * time.Second // a count of the instances
	releaseCooldown = 3 * time.Second // between two releases, plus up to 2 s of jitter
)

// balancer balances the partitions of one subscription among the
// instances of its service.
type balancer struct {
	b   *Broker
	sub broker.Subscription // Partition unset
	key string

	mu      sync.Mutex
	members map[*consumption]command // the last command sent to each

	id       string             // this balancer's, in its wants
	want     *nats.Subscription // the others' wants
	lastWant atomic.Int64       // unix nanoseconds of the last want heard from another

	// Owned by run.
	instances   int
	counted     time.Time
	lastRelease time.Time
	cooldown    time.Duration
}

// join adds c to its subscription's balancer, created and started if need
// be, and returns it.
func (b *Broker) join(c *consumption) *balancer {
	sub := c.sub
	key := ConsumerName(sub.Service, sub.Name)
	b.balMu.Lock()
	defer b.balMu.Unlock()
	if bl, ok := b.balancers[key]; ok {
		bl.add(c)
		return bl
	}
	sub.Partition = 0
	bl := &balancer{b: b, sub: sub, key: key, members: map[*consumption]command{}, instances: 1, id: nuid.Next()}
	// Without the subscription (no permission) partitions only move as
	// holders die or stop.
	if ws, err := b.nc.Subscribe(bl.wantSubject(), func(m *nats.Msg) {
		if string(m.Data) != bl.id {
			bl.lastWant.Store(time.Now().UnixNano())
		}
	}); err == nil {
		bl.want = ws
	} else {
		b.log.Warn("herald/natsjs: balance: cannot follow other instances' claims; partitions move only when their holder stops or dies",
			"subject", bl.wantSubject(), "err", err)
	}
	if b.balancers == nil {
		b.balancers = map[string]*balancer{}
	}
	b.balancers[key] = bl
	bl.add(c)
	b.bg.Add(1)
	go bl.run()
	return bl
}

func (bl *balancer) add(c *consumption) {
	bl.mu.Lock()
	bl.members[c] = cmdPull
	bl.mu.Unlock()
}

func (bl *balancer) remove(c *consumption) {
	bl.mu.Lock()
	delete(bl.members, c)
	bl.mu.Unlock()
}

// wantSubject is where instances below their share say so.
func (bl *balancer) wantSubject() string {
	return bl.b.names.prefix + ".claim." + bl.key
}

// wantsHeard is how long another instance's want counts.
const wantsHeard = 3 * balanceEvery

// run balances until the last member is gone or the broker closes.
func (bl *balancer) run() {
	defer bl.b.bg.Done()
	defer func() {
		if bl.want != nil {
			_ = bl.want.Unsubscribe()
		}
	}()
	for {
		t := time.NewTimer(balanceEvery*8/10 + rand.N(balanceEvery*4/10))
		select {
		case <-bl.b.closed:
			t.Stop()
			return
		case <-t.C:
		}
		// Exit with the last member, under the broker's lock so that a
		// Consume starting now gets a new balancer.
		bl.b.balMu.Lock()
		bl.mu.Lock()
		empty := len(bl.members) == 0
		bl.mu.Unlock()
		if empty {
			delete(bl.b.balancers, bl.key)
			bl.b.balMu.Unlock()
			return
		}
		bl.b.balMu.Unlock()
		ctx, cancel := context.WithTimeout(bl.b.baseCtx, 5*time.Second)
		bl.step(ctx)
		cancel()
	}
}

// step applies the rule once.
func (bl *balancer) step(ctx context.Context) {
	bl.mu.Lock()
	members := make([]*consumption, 0, len(bl.members))
	for c := range bl.members {
		members = append(members, c)
	}
	bl.mu.Unlock()

	n := bl.b.names.partitions
	lo := max(n/bl.instanceCount(ctx), 1)
	held := map[int]*consumption{}
	byPart := map[int][]*consumption{}
	for _, c := range members {
		byPart[c.sub.Partition] = append(byPart[c.sub.Partition], c)
		if c.holding.Load() {
			held[c.sub.Partition] = c
		}
	}

	if len(held) < lo {
		_ = bl.b.nc.Publish(bl.wantSubject(), []byte(bl.id))
	}
	wanted := time.Since(time.Unix(0, bl.lastWant.Load())) < wantsHeard
	if len(held) > lo && wanted && time.Since(bl.lastRelease) > bl.cooldown {
		for p, c := range held { // map order: a random candidate
			bl.send(c, cmdRelease)
			bl.lastRelease = time.Now()
			bl.cooldown = releaseCooldown + rand.N(2*time.Second)
			bl.b.log.Debug("herald/natsjs: balance: releasing a partition", "consumer", c.durable,
				"partition", p, "held", len(held), "instances", bl.instances, "lo", lo)
			break
		}
	}

	now := time.Now().UnixNano()
	for p, cs := range byPart {
		if h, ok := held[p]; ok {
			for _, c := range cs {
				if c != h {
					bl.send(c, cmdIdle) // another Consume of this process holds it
				}
			}
			continue
		}
		want := len(held) < lo
		off := false
		for _, c := range cs {
			off = off || now < c.offUntil.Load()
		}
		if !want || off {
			ci, err := bl.info(ctx, cs[0])
			pin := ""
			if err == nil {
				pin = pinnedClient(ci)
			}
			want = want || err == nil && pin == "" // an orphan
			if pin != "" {
				// Someone took the partition released here: the stay-off
				// has served (should its new holder die, it is an orphan).
				for _, c := range cs {
					if !c.releasing.Load() {
						c.offUntil.Store(0)
					}
				}
			}
		}
		for _, c := range cs {
			if want && now < c.offUntil.Load() {
				bl.send(c, cmdIdle)
				continue
			}
			if want {
				bl.send(c, cmdPull)
			} else {
				bl.send(c, cmdIdle)
			}
		}
	}
}

// send tells c cmd unless it was the last thing it was told (a release
// always goes).
func (bl *balancer) send(c *consumption, cmd command) {
	bl.mu.Lock()
	last, ok := bl.members[c]
	if !ok || last == cmd && cmd != cmdRelease {
		bl.mu.Unlock()
		return
	}
	bl.members[c] = cmd
	if cmd == cmdRelease {
		bl.members[c] = cmdIdle
	}
	bl.mu.Unlock()
	select {
	case c.ctl <- cmd:
	default: // full: told again at the next step
		bl.mu.Lock()
		if _, ok := bl.members[c]; ok {
			bl.members[c] = 0
		}
		bl.mu.Unlock()
	}
}

func (bl *balancer) info(ctx context.Context, c *consumption) (*jetstream.ConsumerInfo, error) {
	return c.cons.Info(ctx)
}

// instanceCount returns the live instances of the service, counted from
// the heartbeats at most every instancesEvery (1 when none, or when they
// cannot be counted at first).
func (bl *balancer) instanceCount(ctx context.Context) int {
	if time.Since(bl.counted) < instancesEvery {
		return bl.instances
	}
	bl.counted = time.Now()
	kv, err := bl.b.kv(ctx, true, false)
	if err != nil || kv == nil {
		return bl.instances
	}
	keys, err := kv.ListKeysFiltered(ctx, safeToken(bl.sub.Service)+".*")
	if err != nil {
		return bl.instances
	}
	count := 0
	for range keys.Keys() {
		count++
	}
	if count != bl.instances {
		bl.b.log.Debug("herald/natsjs: balance: instances", "service", bl.sub.Service, "instances", max(count, 1))
	}
	bl.instances = max(count, 1)
	return bl.instances
}

// command carries out the balancer's cmd in the Consume's goroutine.
func (c *consumption) command(ctx context.Context, cmd command) error {
	switch cmd {
	case cmdPull:
		if c.g == nil && time.Now().UnixNano() >= c.offUntil.Load() {
			return c.startPull()
		}
	case cmdIdle:
		if c.g != nil && c.pin == "" {
			c.stopGen(c.g, false)
			c.g, c.next = nil, nil
		}
	case cmdRelease:
		if c.pin == "" {
			return nil
		}
		c.stopGen(c.g, false)
		c.g, c.next = nil, nil
		c.releasing.Store(true)
		c.offUntil.Store(time.Now().Add(2 * c.b.cfg.pinnedTTL).UnixNano())
		c.release("rebalance: above this instance's share")
		c.releasing.Store(false)
	}
	return nil
}
