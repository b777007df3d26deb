package natsjs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// firstConnect makes Connect's first connection: a round of attempts at
// every URL, and, unless WithConnectRetry(false), another round every
// WithReconnectWait until one succeeds or ctx ends. Each failed round is
// logged with its cause.
func (b *Broker) firstConnect(ctx context.Context, urls []string, opts []nats.Option) (*nats.Conn, error) {
	servers := redactURLs(urls)
	for attempt := 1; ; attempt++ {
		timeout := nats.GetDefaultOptions().Timeout // the dial and handshake timeout per server
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
			timeout = max(time.Until(dl), time.Millisecond)
		}
		nc, err := nats.Connect(strings.Join(urls, ","), append(slices.Clip(opts), nats.Timeout(timeout))...)
		if err == nil {
			if attempt > 1 {
				b.log.Info("herald/natsjs: connected", "url", nc.ConnectedUrlRedacted(), "attempts", attempt)
			}
			return nc, nil
		}
		err = connectCause(err, urls, timeout)
		if !b.cfg.connectRetry {
			return nil, fmt.Errorf("herald/natsjs: connect to %s: %w", servers, err)
		}
		b.log.Warn("herald/natsjs: cannot connect; retrying", "servers", servers, "attempt", attempt,
			"retry_in", b.cfg.reconnectWait, "err", err)
		t := time.NewTimer(b.cfg.reconnectWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("herald/natsjs: connect to %s: %w after %d attempts (last error: %w)", servers, ctx.Err(), attempt, err)
		case <-t.C:
		}
	}
}

// connectCause replaces nats.ErrNoServers, which nats.go returns when every
// server refused the connection, with the refusals themselves.
func connectCause(err error, urls []string, timeout time.Duration) error {
	if !errors.Is(err, nats.ErrNoServers) {
		return err
	}
	var causes []error
	for _, u := range urls {
		c, derr := net.DialTimeout("tcp", dialAddr(u), timeout)
		if derr == nil {
			c.Close() // it is up now: nats.go's own error stands
			continue
		}
		causes = append(causes, fmt.Errorf("%s: %w", redactURL(u), derr))
	}
	switch len(causes) {
	case 0:
		return err
	case 1:
		return errors.Unwrap(causes[0]) // the URL is in the caller's message
	}
	return errors.Join(causes...)
}

// dialAddr is the host:port nats.go dials for u.
func dialAddr(u string) string {
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	if p.Port() != "" {
		return p.Host
	}
	port := "4222"
	switch p.Scheme {
	case "ws":
		port = "80"
	case "wss":
		port = "443"
	}
	return net.JoinHostPort(p.Hostname(), port)
}

// redactURL hides the password or token in u.
func redactURL(u string) string {
	if !strings.Contains(u, "@") {
		return u
	}
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	if _, ok := p.User.Password(); ok {
		return p.Redacted()
	}
	p.User = url.User("xxxxx") // a token
	return p.String()
}

func redactURLs(urls []string) string {
	r := make([]string, len(urls))
	for i, u := range urls {
		r[i] = redactURL(u)
	}
	return strings.Join(r, ",")
}
