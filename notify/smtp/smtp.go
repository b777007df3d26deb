// Package smtp delivers e-mail notifications over SMTP with
// github.com/wneessen/go-mail.
//
// A Sender keeps a bounded pool of connected clients (one SMTP session
// each) and reuses them across sends: a session idle for a second or more is
// checked with NOOP before use, and a broken one is discarded and redialled, so a restarted
// server is picked up again without a restart of the sender. STARTTLS
// (mandatory by default, opportunistic or off) or implicit TLS, and SMTP
// AUTH (PLAIN, LOGIN, CRAM-MD5, SCRAM, XOAUTH2 or auto-discovery) are
// options.
//
// A message has From, To and Subject headers, a Message-ID derived from
// Message.Key — "<hex(sha256(key))@domain>", so a resend carries the same
// Message-ID and receivers can drop it — and a text/plain body, with a
// text/html alternative (multipart/alternative) when Message.HTML is set.
// The sender does not escape the HTML: that is the template's job.
//
// Errors:
//
//	invalid To address (checked before sending)           notify.ErrPermanent
//	5xx to RCPT: unknown user / mailbox unavailable
//	  (5.1.1, 5.1.2, 5.1.6, 5.1.10, or such a reply text)  notify.ErrGone (a hard bounce)
//	other 5xx (MAIL, RCPT, end of DATA; 5.7.x policy)      notify.ErrPermanent
//	4xx                                                    retryable
//	connection, TLS, greeting or AUTH failures, timeouts   retryable
//	the context's cancellation or deadline                 retryable, wraps ctx.Err()
//
// Failures to connect, to negotiate TLS or to authenticate are retryable
// even when the server answers 5xx: they are the sender's configuration or
// the server's state, not the message's fault, and must not drop it.
package smtp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/notify"
)

// ErrInvalidOption reports an invalid option or constructor argument.
var ErrInvalidOption = errors.New("smtp: invalid option")

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("smtp: sender closed")

// Defaults.
const (
	DefaultName            = "smtp"           // the provider name (WithName)
	DefaultPoolSize        = 4                // open sessions at most (WithPoolSize)
	DefaultTimeout         = 15 * time.Second // connect and per command (WithTimeout)
	DefaultIdleTimeout     = 30 * time.Second // pooled session reuse (WithIdleTimeout)
	DefaultMessageIDDomain = "herald"         // Message-ID right-hand side (WithMessageIDDomain)
)

// TLSPolicy says whether a connection is upgraded with STARTTLS.
type TLSPolicy int

// The STARTTLS policies.
const (
	// TLSMandatory fails a connection whose server does not offer
	// STARTTLS (the default).
	TLSMandatory TLSPolicy = iota
	// TLSOpportunistic uses STARTTLS when the server offers it.
	TLSOpportunistic
	// TLSNone never uses STARTTLS.
	TLSNone
)

// String returns the policy's name: "mandatory", "opportunistic" or "none".
func (p TLSPolicy) String() string {
	switch p {
	case TLSMandatory:
		return "mandatory"
	case TLSOpportunistic:
		return "opportunistic"
	case TLSNone:
		return "none"
	}
	return "TLSPolicy(" + strconv.Itoa(int(p)) + ")"
}

// AuthMechanism is an SMTP AUTH mechanism.
type AuthMechanism string

// The SMTP AUTH mechanisms. PLAIN and LOGIN refuse to send credentials
// over a connection that is neither TLS nor to localhost.
const (
	AuthPlain         AuthMechanism = "PLAIN"
	AuthLogin         AuthMechanism = "LOGIN"
	AuthCRAMMD5       AuthMechanism = "CRAM-MD5"
	AuthSCRAMSHA1     AuthMechanism = "SCRAM-SHA-1"
	AuthSCRAMSHA256   AuthMechanism = "SCRAM-SHA-256"
	AuthXOAUTH2       AuthMechanism = "XOAUTH2"
	AuthAutoDiscover  AuthMechanism = "AUTO" // the strongest the server offers
	authMechanismNone AuthMechanism = ""
)

func (a AuthMechanism) goMail() (gomail.SMTPAuthType, bool) {
	switch a {
	case AuthPlain:
		return gomail.SMTPAuthPlain, true
	case AuthLogin:
		return gomail.SMTPAuthLogin, true
	case AuthCRAMMD5:
		return gomail.SMTPAuthCramMD5, true
	case AuthSCRAMSHA1:
		return gomail.SMTPAuthSCRAMSHA1, true
	case AuthSCRAMSHA256:
		return gomail.SMTPAuthSCRAMSHA256, true
	case AuthXOAUTH2:
		return gomail.SMTPAuthXOAUTH2, true
	case AuthAutoDiscover:
		return gomail.SMTPAuthAutoDiscover, true
	}
	return "", false
}

// Option configures a Sender.
type Option func(*config) error

type config struct {
	name        string
	policy      TLSPolicy
	implicitTLS bool
	tlsConfig   *tls.Config
	auth        AuthMechanism
	user, pass  string
	helo        string
	timeout     time.Duration
	poolSize    int
	idleTimeout time.Duration
	idDomain    string
}

// WithName sets the provider name reported by Name and in receipts.
func WithName(name string) Option {
	return func(c *config) error {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("%w: empty name", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}

// WithTLSPolicy sets the STARTTLS policy (default TLSMandatory).
func WithTLSPolicy(p TLSPolicy) Option {
	return func(c *config) error {
		if p < TLSMandatory || p > TLSNone {
			return fmt.Errorf("%w: unknown TLS policy %v", ErrInvalidOption, p)
		}
		c.policy = p
		return nil
	}
}

// WithImplicitTLS connects with TLS from the first byte (SMTPS, port 465)
// instead of STARTTLS.
func WithImplicitTLS() Option {
	return func(c *config) error {
		c.implicitTLS = true
		return nil
	}
}

// WithTLSConfig sets the TLS configuration for STARTTLS and implicit TLS
// (a copy is kept; an empty ServerName becomes the server's host).
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error {
		if cfg == nil {
			return fmt.Errorf("%w: nil TLS config", ErrInvalidOption)
		}
		c.tlsConfig = cfg.Clone()
		return nil
	}
}

// WithAuth authenticates each connection with mech as username and
// password (for XOAUTH2, the password is the access token).
func WithAuth(mech AuthMechanism, username, password string) Option {
	return func(c *config) error {
		if _, ok := mech.goMail(); !ok {
			return fmt.Errorf("%w: unknown AUTH mechanism %q", ErrInvalidOption, mech)
		}
		if username == "" || password == "" {
			return fmt.Errorf("%w: AUTH needs a username and a password", ErrInvalidOption)
		}
		c.auth, c.user, c.pass = mech, username, password
		return nil
	}
}

// WithHELO sets the name sent in EHLO/HELO (default: the host name).
func WithHELO(name string) Option {
	return func(c *config) error {
		if name == "" || strings.ContainsAny(name, " \t\r\n") {
			return fmt.Errorf("%w: invalid HELO name %q", ErrInvalidOption, name)
		}
		c.helo = name
		return nil
	}
}

// WithTimeout bounds connecting and each SMTP command (default
// DefaultTimeout). The context of Send bounds the whole send as well.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout %v must be positive", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	}
}

// WithPoolSize bounds the number of open SMTP sessions (default
// DefaultPoolSize); a Send waits for a free one.
func WithPoolSize(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1000 {
			return fmt.Errorf("%w: pool size %d not in [1, 1000]", ErrInvalidOption, n)
		}
		c.poolSize = n
		return nil
	}
}

// WithIdleTimeout closes a pooled session unused for d instead of reusing
// it (default DefaultIdleTimeout; servers drop idle sessions after a few
// minutes).
func WithIdleTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: idle timeout %v must be positive", ErrInvalidOption, d)
		}
		c.idleTimeout = d
		return nil
	}
}

// WithMessageIDDomain sets the right-hand side of the Message-ID (default
// "herald"), e.g. the sending domain.
func WithMessageIDDomain(domain string) Option {
	return func(c *config) error {
		if !dotAtom(domain) {
			return fmt.Errorf("%w: Message-ID domain %q is not a dot-atom", ErrInvalidOption, domain)
		}
		c.idDomain = domain
		return nil
	}
}

// Sender sends e-mail through one SMTP server. It is safe for concurrent
// use; Close closes its pooled sessions.
type Sender struct {
	name        string
	host        string
	port        int
	from        *netmail.Address
	idDomain    string
	implicitTLS bool
	tlsConfig   *tls.Config
	clientOpts  []gomail.Option
	idleTimeout time.Duration

	slots  chan struct{} // one per open session
	mu     sync.Mutex
	idle   []*session // most recently used last
	closed bool
}

// New returns a Sender for the SMTP server at addr ("host:port") sending
// as from (an address, optionally with a display name: "Herald
// <noreply@example.com>"). It connects lazily, on the first Send. Invalid
// arguments or options yield an error wrapping ErrInvalidOption.
func New(addr, from string, opts ...Option) (*Sender, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("%w: address %q is not host:port", ErrInvalidOption, addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: invalid port in %q", ErrInvalidOption, addr)
	}
	fromAddr, err := netmail.ParseAddress(from)
	if err != nil || strings.ContainsAny(from, "\r\n") {
		return nil, fmt.Errorf("%w: from address %q: %v", ErrInvalidOption, from, err)
	}
	c := config{
		name:        DefaultName,
		policy:      TLSMandatory,
		timeout:     DefaultTimeout,
		poolSize:    DefaultPoolSize,
		idleTimeout: DefaultIdleTimeout,
		idDomain:    DefaultMessageIDDomain,
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	tlsConfig := c.tlsConfig
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsConfig.ServerName == "" {
		tlsConfig.ServerName = host
	}
	copts := []gomail.Option{
		gomail.WithPort(port),
		gomail.WithTimeout(c.timeout),
		gomail.WithTLSConfig(tlsConfig),
	}
	switch {
	case c.implicitTLS:
		copts = append(copts, gomail.WithSSL())
	case c.policy == TLSOpportunistic:
		copts = append(copts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case c.policy == TLSNone:
		copts = append(copts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		copts = append(copts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if c.auth != authMechanismNone {
		t, _ := c.auth.goMail()
		copts = append(copts, gomail.WithSMTPAuth(t), gomail.WithUsername(c.user), gomail.WithPassword(c.pass))
	}
	if c.helo != "" {
		copts = append(copts, gomail.WithHELO(c.helo))
	}
	// Check the options once, without connecting.
	if _, err := gomail.NewClient(host, copts...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return &Sender{
		name:        c.name,
		host:        host,
		port:        port,
		from:        fromAddr,
		idDomain:    c.idDomain,
		implicitTLS: c.implicitTLS,
		tlsConfig:   tlsConfig,
		clientOpts:  copts,
		idleTimeout: c.idleTimeout,
		slots:       make(chan struct{}, c.poolSize),
	}, nil
}

// Name returns the provider name ("smtp" unless WithName).
func (s *Sender) Name() string { return s.name }

// Channel returns notify.Email.
func (s *Sender) Channel() string { return notify.Email }

// MessageID returns the Message-ID header value ("<…@…>") for an
// idempotency key: hex(sha256(key)) at domain.
func MessageID(key, domain string) string {
	sum := sha256.Sum256([]byte(key))
	return "<" + hex.EncodeToString(sum[:]) + "@" + domain + ">"
}

// Send delivers m to the address m.To. Receipt.ProviderID is the
// Message-ID; the server's acceptance is not a delivery, so
// Receipt.Delivered stays false. See the package documentation for how
// failures are classified.
func (s *Sender) Send(ctx context.Context, m notify.Message) (notify.Receipt, error) {
	rc := notify.Receipt{Provider: s.name}
	if err := ctx.Err(); err != nil {
		return rc, fmt.Errorf("smtp: %w", err)
	}
	to, err := recipient(m.To)
	if err != nil {
		return rc, fmt.Errorf("smtp: %w", err)
	}
	id := MessageID(m.Key, s.idDomain)
	if m.Key == "" {
		id, err = randomMessageID(s.idDomain)
		if err != nil {
			return rc, fmt.Errorf("smtp: Message-ID: %w", err)
		}
	}
	rc.ProviderID = id
	// Each attempt on a pooled session that turns out to be dead (the
	// server restarted, or dropped it) is discarded and redialled; only
	// a freshly dialled session's failure is the answer.
	for {
		sess, reused, err := s.acquire(ctx)
		if err != nil {
			return rc, fmt.Errorf("smtp: %w", err)
		}
		if reused && !sess.check(ctx) {
			s.discard(sess)
			if ctx.Err() != nil {
				return rc, fmt.Errorf("smtp: %w", ctx.Err())
			}
			s.dropIdle()
			continue
		}
		msg := s.build(m, to, id)
		err = sess.send(ctx, msg)
		switch {
		case err == nil:
			s.release(sess)
			return rc, nil
		case errors.Is(err, errInterruptedAfterAccept):
			s.discard(sess)
			return rc, nil
		case ctx.Err() != nil:
			s.discard(sess)
			return rc, fmt.Errorf("smtp: %w (%w)", ctx.Err(), err)
		case reused && stale(err):
			s.discard(sess)
			s.dropIdle()
			continue
		case reusable(err):
			s.release(sess)
		default:
			s.discard(sess)
		}
		return rc, fmt.Errorf("smtp: %w", classify(err))
	}
}

// Close closes the idle sessions (with QUIT) and makes later Sends fail
// with ErrClosed; sessions in use are closed when their Send ends.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	var errs []error
	for _, c := range idle {
		errs = append(errs, c.quit())
	}
	return errors.Join(errs...)
}

func (s *Sender) build(m notify.Message, to *netmail.Address, id string) *gomail.Msg {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(s.from)
	msg.ToMailAddress(to)
	msg.Subject(m.Subject)
	msg.SetMessageIDWithValue(strings.TrimSuffix(strings.TrimPrefix(id, "<"), ">"))
	msg.SetDate()
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg
}

// recipient parses a bare recipient address; anything else is permanent.
func recipient(to string) (*netmail.Address, error) {
	if to == "" || strings.ContainsAny(to, "\r\n\x00") {
		return nil, fmt.Errorf("%w: invalid recipient address", notify.ErrPermanent)
	}
	a, err := netmail.ParseAddress(to)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid recipient address %q: %w", notify.ErrPermanent, to, err)
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 || at == len(a.Address)-1 {
		return nil, fmt.Errorf("%w: invalid recipient address %q", notify.ErrPermanent, to)
	}
	return &netmail.Address{Address: a.Address}, nil
}

func randomMessageID(domain string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "<" + hex.EncodeToString(b[:]) + "@" + domain + ">", nil
}

// dotAtom reports whether d is an RFC 5322 dot-atom of letters, digits and
// hyphens (a domain-like right-hand side).
func dotAtom(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return false
		}
		for _, c := range label {
			if !(c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
				return false
			}
		}
	}
	return true
}
