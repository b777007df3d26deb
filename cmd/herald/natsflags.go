package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/spf13/pflag"
)

// devListen is where herald dev listens by default, and devURL the URL
// every other command connects to when neither a flag nor the environment
// names a server.
const (
	devListen = "127.0.0.1:4333"
	devURL    = "nats://" + devListen
)

// natsURLFromEnv is the NATS server the environment names: HERALD_NATS_URL,
// else NATS_URL (the NATS tools' own variable, which herald dev prints),
// else herald dev's default URL.
func natsURLFromEnv() string {
	return envOr("HERALD_NATS_URL", envOr("NATS_URL", devURL))
}

// registerNATS adds --server (-s) and its old name --nats, hidden, both
// setting *url. what says what the command needs the server for.
func registerNATS(fs *pflag.FlagSet, url *string, what string) {
	def := natsURLFromEnv()
	fs.StringVarP(url, "server", "s", def, "NATS server `URLS`, comma-separated, "+what+
		" (env HERALD_NATS_URL or NATS_URL; herald dev's URL by default)")
	fs.StringVar(url, "nats", def, "the old name of --server")
	_ = fs.MarkHidden("nats")
}

// connectNATS connects to the NATS servers urls (comma-separated) and fails
// fast: a server that is down is reported at once, with its cause.
func connectNATS(ctx context.Context, urls string, opts ...natsjs.Option) (*natsjs.Broker, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // bounds the JetStream check after connecting too
	defer cancel()
	opts = append([]natsjs.Option{natsjs.WithConnectRetry(false), natsjs.WithName("herald-cli")}, opts...)
	b, err := natsjs.Connect(ctx, strings.Split(urls, ","), opts...)
	if err != nil {
		return nil, connectError(urls, err)
	}
	return b, nil
}

// connectError says why the CLI could not connect to urls, in a line:
// "cannot connect to nats://127.0.0.1:4333: connection refused".
func connectError(urls string, err error) error {
	var (
		errno syscall.Errno
		dns   *net.DNSError
	)
	cause := err
	switch {
	case errors.Is(err, natsjs.ErrInvalidOption):
		return usageErrorf("--server %s: %w", redactURLs(urls), err)
	case strings.Contains(urls, ","): // several servers: natsjs names each one's cause
	case errors.As(err, &errno):
		cause = errno
	case errors.As(err, &dns):
		cause = dns
	}
	hint := ""
	if urls == devURL {
		hint = " (herald dev's default URL: is herald dev running? Or pass --server URL, or set NATS_URL)"
	}
	return fmt.Errorf("cannot connect to %s: %w%s", redactURLs(urls), cause, hint)
}

// redactURLs hides the passwords and tokens in comma-separated URLs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		p, err := url.Parse(u)
		if err != nil || p.User == nil {
			continue
		}
		if _, ok := p.User.Password(); ok {
			parts[i] = p.Redacted()
		} else {
			p.User = url.User("xxxxx")
			parts[i] = p.String()
		}
	}
	return strings.Join(parts, ",")
}
