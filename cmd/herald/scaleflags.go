package main

import (
	"fmt"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/examples/shop/shop"
	"github.com/spf13/pflag"
)

// scaleFlags are --partitions and --replicas of the commands that set up
// the integration streams (demo, dev), with their defaults from
// HERALD_PARTITIONS and HERALD_REPLICAS, read as the shop's services read
// them.
type scaleFlags struct {
	partitions, replicas int
	envErr               error // a HERALD_PARTITIONS or HERALD_REPLICAS that is no number
}

// registerScale adds --partitions and --replicas to fs.
func registerScale(fs *pflag.FlagSet, s *scaleFlags) {
	p, r, err := shop.ScaleFromEnv()
	s.envErr = err
	fs.IntVar(&s.partitions, "partitions", p, fmt.Sprintf("`N` partitions of the integration events, 1 to %d, the same for every service of the system (env HERALD_PARTITIONS)", natsjs.MaxPartitions))
	fs.IntVar(&s.replicas, "replicas", r, "`N` replicas of every stream, 1 to 5; more than 1 needs a NATS cluster (env HERALD_REPLICAS)")
}

// check rejects counts no broker accepts, as usage errors naming the flag.
// embedded says the command runs the embedded single-node server, which
// cannot hold more than one replica.
func (s scaleFlags) check(embedded bool) error {
	switch {
	case s.envErr != nil:
		return usageError{s.envErr}
	case s.partitions < 1 || s.partitions > natsjs.MaxPartitions:
		return usageErrorf("--partitions %d: want 1 to %d", s.partitions, natsjs.MaxPartitions)
	case s.replicas < 1 || s.replicas > 5:
		return usageErrorf("--replicas %d: want 1 to 5", s.replicas)
	case embedded && s.replicas > 1:
		return usageErrorf("--replicas %d: replicas need a NATS cluster, and this command runs the embedded single-node server: "+
			"start a 3-node nats-server cluster and run the services with --server URLS of its nodes and --replicas %d", s.replicas, s.replicas)
	}
	return nil
}

// options are the broker options of the flags.
func (s scaleFlags) options() []natsjs.Option {
	return []natsjs.Option{natsjs.WithPartitions(s.partitions), natsjs.WithReplicas(s.replicas)}
}
