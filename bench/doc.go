// Package bench is herald's benchmark module: a separate Go module, so that
// herald itself does not depend on the peers it is compared with. Its
// program cmd/peers runs the Watermill systems of `herald bench bus` against
// the nats-server that herald bench started, and draws the chart; herald
// bench builds and runs it when it runs inside a herald source checkout.
//
//	herald bench all --markdown docs/benchmarks.md --chart docs/benchmarks.png
package bench
