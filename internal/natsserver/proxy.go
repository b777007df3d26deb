package natsserver

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from loopback ports of its own to target
// addresses, one port per target, so that a test can cut the link between
// two regions and restore it: Cut closes every forwarded connection and
// refuses new ones (it accepts and closes them at once, keeping its ports);
// Restore accepts again. The test's cleanup closes it.
type Proxy struct {
	t       testing.TB
	targets []string
	lns     []net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}

	wg sync.WaitGroup // accept loops and pipes
}

// StartProxy listens on a free loopback port for each target (host:port)
// and forwards what it accepts there to that target.
func StartProxy(t testing.TB, targets ...string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, targets: targets, conns: map[net.Conn]struct{}{}}
	for range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.Close()
			t.Fatalf("natsserver: proxy: %v", err)
		}
		p.lns = append(p.lns, ln)
	}
	for i, ln := range p.lns {
		p.wg.Go(func() { p.accept(ln, targets[i]) })
	}
	t.Cleanup(p.Close)
	return p
}

// Addrs returns the proxy's addresses (host:port), one per target, in the
// order of the targets.
func (p *Proxy) Addrs() []string {
	addrs := make([]string, len(p.lns))
	for i, ln := range p.lns {
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// URLs returns the proxy's addresses as URLs of scheme, e.g. "nats-leaf".
func (p *Proxy) URLs(scheme string) []string {
	urls := p.Addrs()
	for i, a := range urls {
		urls[i] = scheme + "://" + a
	}
	return urls
}

// Cut closes every connection the proxy forwards and refuses new ones
// until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore makes the proxy forward new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops the proxy: it closes its ports and every connection and
// waits for its goroutines.
func (p *Proxy) Close() {
	for _, ln := range p.lns {
		ln.Close()
	}
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.t.Logf("natsserver: proxy %s: accept: %v", ln.Addr(), err)
			}
			return
		}
		if !p.track(c) {
			c.Close()
			continue
		}
		p.wg.Go(func() {
			defer p.untrack(c)
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			if !p.track(u) {
				u.Close()
				return
			}
			defer p.untrack(u)
			pipe(c, u)
		})
	}
}

// track registers c, unless the proxy is cut.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pipe copies both ways until either side ends, then closes both.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(a, b); a.Close(); b.Close() })
	_, _ = io.Copy(b, a)
	a.Close()
	b.Close()
	wg.Wait()
}
