package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	gmsmtp "github.com/wneessen/go-mail/smtp"
)

// checkAfter is how long a pooled session may sit idle before a send checks
// it with NOOP first. A session in steady use is not checked: if it died
// anyway, MAIL fails before anything of the message was sent, and the send
// moves to a new session (see stale).
const checkAfter = time.Second

// session is one connected go-mail client (one SMTP session). The net.Conn
// is kept so a cancelled context can interrupt a blocked command by
// closing it.
type session struct {
	client   *gomail.Client // created WithoutNoop: check decides
	sc       *gmsmtp.Client // the connected session
	lastUsed time.Time

	mu          sync.Mutex
	nc          net.Conn
	interrupted bool
}

// attach records the connection the client dialled; it reports false when
// the session was interrupted before, and the caller must close nc.
func (c *session) attach(nc net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.interrupted {
		return false
	}
	c.nc = nc
	return true
}

// interrupt closes the connection, making any blocked read or write fail.
// It runs from context.AfterFunc.
func (c *session) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	if c.nc != nil {
		_ = c.nc.Close()
	}
}

// closeNow drops the connection without QUIT.
func (c *session) closeNow() { c.interrupt() }

// quit ends the session politely, giving the server a second to answer.
func (c *session) quit() error {
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		return nil
	}
	_ = nc.SetDeadline(time.Now().Add(time.Second))
	err := c.client.CloseWithSMTPClient(c.sc)
	c.closeNow()
	if err != nil {
		return fmt.Errorf("smtp: QUIT: %w", err)
	}
	return nil
}

// check sends NOOP on a session that sat idle for checkAfter or longer,
// reporting whether it is alive; a cancelled ctx interrupts it.
func (c *session) check(ctx context.Context) bool {
	if time.Since(c.lastUsed) < checkAfter {
		return true
	}
	stop := context.AfterFunc(ctx, c.interrupt)
	err := c.sc.Noop()
	return stop() && err == nil
}

// send sends msg on the session; a cancelled ctx interrupts it.
func (c *session) send(ctx context.Context, msg *gomail.Msg) error {
	stop := context.AfterFunc(ctx, c.interrupt)
	err := c.client.SendWithSMTPClient(c.sc, msg)
	if !stop() && err == nil {
		// Accepted, then interrupted: the message is the server's; only
		// the session is lost.
		return errInterruptedAfterAccept
	}
	if err != nil && msg.IsDelivered() {
		// The server accepted the message and a later step failed.
		return errInterruptedAfterAccept
	}
	return err
}

// errInterruptedAfterAccept marks a send whose message the server accepted
// but whose session cannot be reused.
var errInterruptedAfterAccept = errors.New("session lost after the message was accepted")

// dial opens a new session: TCP (or TLS) connect, greeting, EHLO, STARTTLS
// and AUTH, all interruptible through ctx.
func (s *Sender) dial(ctx context.Context) (*session, error) {
	c := &session{}
	dialFn := func(dctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		var nc net.Conn
		var err error
		if s.implicitTLS {
			td := tls.Dialer{NetDialer: &d, Config: s.tlsConfig}
			nc, err = td.DialContext(dctx, network, address)
		} else {
			nc, err = d.DialContext(dctx, network, address)
		}
		if err != nil {
			return nil, err
		}
		if !c.attach(nc) {
			_ = nc.Close()
			return nil, context.Canceled
		}
		return nc, nil
	}
	// No RSET after an accepted message: the end of DATA already cleared
	// the transaction (RFC 5321, 4.1.1.4). A failed MAIL or RCPT is still
	// followed by RSET.
	opts := append(slices.Clone(s.clientOpts), gomail.WithDialContextFunc(dialFn), gomail.WithoutNoop(), gomail.WithoutRset())
	client, err := gomail.NewClient(s.host, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c.client = client
	stop := context.AfterFunc(ctx, c.interrupt)
	c.sc, err = client.DialToSMTPClientWithContext(ctx)
	interrupted := !stop()
	switch {
	case interrupted:
		c.closeNow()
		return nil, fmt.Errorf("connect to %s:%d: %w", s.host, s.port, ctx.Err())
	case err != nil:
		c.closeNow()
		return nil, fmt.Errorf("connect to %s:%d: %w", s.host, s.port, err)
	}
	return c, nil
}

// acquire takes a pooled session or dials one, waiting for a free slot.
// reused says the session came from the pool.
func (s *Sender) acquire(ctx context.Context) (c *session, reused bool, err error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.slots
		return nil, false, ErrClosed
	}
	var expired []*session
	for len(s.idle) > 0 {
		last := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if time.Since(last.lastUsed) > s.idleTimeout {
			expired = append(expired, last)
			continue
		}
		c = last
		break
	}
	s.mu.Unlock()
	for _, e := range expired {
		e.closeNow()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = s.dial(ctx)
	if err != nil {
		<-s.slots
		return nil, false, err
	}
	return c, false, nil
}

// release returns a healthy session to the pool.
func (s *Sender) release(c *session) {
	c.lastUsed = time.Now()
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.idle = append(s.idle, c)
	}
	s.mu.Unlock()
	if closed {
		_ = c.quit()
	}
	<-s.slots
}

// discard drops a broken session and frees its slot.
func (s *Sender) discard(c *session) {
	c.closeNow()
	<-s.slots
}

// dropIdle closes every idle session: one was found dead, so the server
// likely dropped them all.
func (s *Sender) dropIdle() {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, c := range idle {
		c.closeNow()
	}
}
