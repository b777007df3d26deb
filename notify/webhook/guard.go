package webhook

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/notify"
)

// Guard is the SSRF guard of the HTTP channels: it refuses to connect to
// loopback, private (RFC 1918, unique-local fc00::/7), link-local
// (169.254.0.0/16 — the cloud metadata address 169.254.169.254 among them —
// and fe80::/10), unspecified, multicast, broadcast and other special-purpose
// addresses, unless an option allows them.
//
// The check runs twice: on the URL, so a literal address is refused before
// anything is resolved or dialled, and at dial time on the resolved IP
// address, from a net.Dialer Control function that runs before the
// connection is attempted, so a name that resolves (or re-resolves, DNS
// rebinding) to a refused address is caught too. Redirects pass through the
// same checks. A refusal wraps notify.ErrRefused.
//
// A Guard is immutable and safe for concurrent use.
type Guard struct {
	allowPrivate bool
	prefixes     []netip.Prefix
	hosts        map[string]bool
	special      []denyRange
	embed        [3]netip.Prefix // NAT64, local NAT64, 6to4
	guarded      net.Dialer      // refuses by the rules
	open         net.Dialer      // for hosts on the allow-list
}

// GuardOption configures a Guard.
type GuardOption func(*Guard) error

// AllowPrivate lets the guard connect to every address, private, loopback
// and link-local ones included. It is meant for tests and for deployments
// whose endpoints live on a private network.
func AllowPrivate() GuardOption {
	return func(g *Guard) error {
		g.allowPrivate = true
		return nil
	}
}

// Allow puts entries on the allow-list: a CIDR prefix ("10.1.0.0/16"), a
// single IP address ("127.0.0.1", "::1") or a host name ("hooks.internal"),
// matched case-insensitively against the URL's host and then dialled
// without the address check.
func Allow(entries ...string) GuardOption {
	return func(g *Guard) error {
		for _, e := range entries {
			e = strings.TrimSpace(e)
			if e == "" {
				return fmt.Errorf("%w: empty allow-list entry", ErrInvalidOption)
			}
			if p, err := netip.ParsePrefix(e); err == nil {
				g.prefixes = append(g.prefixes, p.Masked())
				continue
			}
			if a, err := netip.ParseAddr(e); err == nil {
				a = a.Unmap()
				g.prefixes = append(g.prefixes, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			if !validHostname(e) {
				return fmt.Errorf("%w: allow-list entry %q is neither a CIDR, an IP address nor a host name", ErrInvalidOption, e)
			}
			if g.hosts == nil {
				g.hosts = make(map[string]bool)
			}
			g.hosts[strings.ToLower(strings.TrimSuffix(e, "."))] = true
		}
		return nil
	}
}

// NewGuard returns a Guard refusing what the rules refuse, less what opts
// allow. An invalid option yields an error wrapping ErrInvalidOption.
func NewGuard(opts ...GuardOption) (*Guard, error) {
	g := &Guard{
		special: specialRanges(),
		embed:   [3]netip.Prefix{netip.MustParsePrefix(nat64), netip.MustParsePrefix(nat64Loc), netip.MustParsePrefix(sixToFour)},
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil guard option", ErrInvalidOption)
		}
		if err := o(g); err != nil {
			return nil, err
		}
	}
	g.guarded = net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.Control}
	g.open = net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return g, nil
}

// CheckIP returns nil when the guard lets ip be dialled, and an error
// wrapping notify.ErrRefused otherwise.
func (g *Guard) CheckIP(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	if g.allowPrivate {
		return nil
	}
	for _, p := range g.prefixes {
		if p.Contains(ip) {
			return nil
		}
	}
	if reason := g.blocked(ip); reason != "" {
		return fmt.Errorf("%w: %s address %s", notify.ErrRefused, reason, ip)
	}
	return nil
}

// CheckURL checks a destination before anything is resolved: the scheme
// must be http or https (else notify.ErrPermanent), the host must be set,
// and a literal IP address must pass CheckIP (else notify.ErrRefused).
// Host names are checked at dial time, on the addresses they resolve to.
func (g *Guard) CheckURL(u *url.URL) error {
	if u == nil {
		return fmt.Errorf("%w: no URL", notify.ErrPermanent)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: URL scheme %q is not http or https", notify.ErrPermanent, u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: URL has no host", notify.ErrPermanent)
	}
	if g.hostAllowed(host) {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return g.CheckIP(ip)
	}
	if !validHostname(host) {
		return fmt.Errorf("%w: invalid host %q", notify.ErrRefused, host)
	}
	return nil
}

// Control is a net.Dialer Control function: it runs after the address is
// resolved and before the connection is attempted, and refuses an address
// CheckIP refuses. Nothing is sent to a refused address.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable dial address %q (%s)", notify.ErrRefused, address, network)
	}
	return g.CheckIP(ap.Addr())
}

// DialContext dials address ("host:port") for an http.Transport: a host on
// the allow-list is dialled as is; any other is resolved and each resolved
// address is checked by Control before it is connected to.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("%w: dial address %q: %w", notify.ErrRefused, address, err)
	}
	if g.hostAllowed(host) {
		return g.open.DialContext(ctx, network, address)
	}
	return g.guarded.DialContext(ctx, network, address)
}

// NewClient returns an http.Client whose connections go through the guard:
// no proxy (a proxy would connect on the guard's behalf), the guarded
// dialer, and a redirect policy that checks every hop with CheckURL and
// follows at most maxRedirects hops (0: none; the 3xx is then returned as
// the response). timeout bounds each request as a whole.
func (g *Guard) NewClient(timeout time.Duration, maxRedirects int) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           g.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return http.ErrUseLastResponse
			}
			if err := g.CheckURL(req.URL); err != nil {
				return fmt.Errorf("redirect to %s: %w", req.URL.Host, err)
			}
			return nil
		},
	}
}

func (g *Guard) hostAllowed(host string) bool {
	return g.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// denyRange is a special-purpose range (RFC 6890 and successors) that the
// netip predicates do not cover.
type denyRange struct {
	prefix netip.Prefix
	reason string
}

func specialRanges() []denyRange {
	p := netip.MustParsePrefix
	return []denyRange{
		{p("0.0.0.0/8"), "this-network"},
		{p("100.64.0.0/10"), "shared (CGNAT)"},
		{p("192.0.0.0/24"), "IETF protocol"},
		{p("192.0.2.0/24"), "documentation"},
		{p("198.18.0.0/15"), "benchmarking"},
		{p("198.51.100.0/24"), "documentation"},
		{p("203.0.113.0/24"), "documentation"},
		{p("240.0.0.0/4"), "reserved or broadcast"},
		{p("100::/64"), "discard-only"},
		{p("2001::/32"), "Teredo"},
		{p("2001:db8::/32"), "documentation"},
		{p("fec0::/10"), "site-local"},
	}
}

// The IPv6 prefixes that embed an IPv4 address (NAT64, local-use NAT64,
// 6to4).
const (
	nat64     = "64:ff9b::/96"
	nat64Loc  = "64:ff9b:1::/48"
	sixToFour = "2002::/16"
)

// blocked says why ip is refused by default, or "" when it is not.
func (g *Guard) blocked(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, s := range g.special {
		if s.prefix.Contains(ip) {
			return s.reason
		}
	}
	// IPv6 forms that embed an IPv4 address reach that address.
	if ip.Is6() {
		b := ip.As16()
		switch {
		case g.embed[0].Contains(ip), g.embed[1].Contains(ip):
			if r := g.blocked(netip.AddrFrom4([4]byte(b[12:16]))); r != "" {
				return "NAT64-embedded " + r
			}
		case g.embed[2].Contains(ip):
			if r := g.blocked(netip.AddrFrom4([4]byte(b[2:6]))); r != "" {
				return "6to4-embedded " + r
			}
		}
	}
	return ""
}

// validHostname reports whether h is a syntactically valid DNS name.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			ok := c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
			if !ok {
				return false
			}
		}
	}
	return true
}
