package smtp_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// stored is one message the test server accepted.
type stored struct {
	From string
	To   []string
	Data []byte
	User string // the authenticated user, if any
}

// backend is a go-smtp Backend that stores what it accepts. Recipients
// whose local part names a reply make RCPT fail with it.
type backend struct {
	user, pass string   // credentials, when AUTH is required
	mechs      []string // offered AUTH mechanisms
	// closeAfter > 0 answers MAIL with 421 (closing the session, as after
	// an idle timeout) once a session has taken that many messages.
	closeAfter int

	sessions atomic.Int64
	mu       sync.Mutex
	msgs     []stored
}

func (b *backend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	b.sessions.Add(1)
	return &session{b: b}, nil
}

func (b *backend) messages() []stored {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]stored(nil), b.msgs...)
}

type session struct {
	b    *backend
	user string
	from string
	to   []string
	sent int
}

func (s *session) AuthMechanisms() []string { return s.b.mechs }

func (s *session) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != s.b.user || pass != s.b.pass {
			return gosmtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	case "CRAM-MD5":
		return &cramServer{user: s.b.user, pass: s.b.pass, ok: func(u string) { s.user = u }}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, _ *gosmtp.MailOptions) error {
	if s.b.user != "" && s.user == "" {
		return gosmtp.ErrAuthRequired
	}
	if s.b.closeAfter > 0 && s.sent >= s.b.closeAfter {
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "idle timeout, closing"}
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	switch strings.SplitN(to, "@", 2)[0] {
	case "gone":
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "user unknown"}
	case "unavailable":
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.NoEnhancedCode, Message: "Requested action not taken: mailbox unavailable"}
	case "policy":
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "mailbox unavailable: rejected by policy"}
	case "relay":
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "relay access denied"}
	case "greylisted":
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "greylisted, try again later"}
	case "full":
		return &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if bytes.Contains(data, []byte("REJECT-AT-DATA")) {
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}
	}
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, stored{From: s.from, To: append([]string(nil), s.to...), Data: data, User: s.user})
	s.b.mu.Unlock()
	s.sent++
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN.
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if resp != nil { // initial response: the username
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step++
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

// cramServer is the server side of AUTH CRAM-MD5.
type cramServer struct {
	user, pass string
	ok         func(user string)
	challenge  []byte
}

func (c *cramServer) Next(resp []byte) ([]byte, bool, error) {
	if c.challenge == nil {
		c.challenge = fmt.Appendf(nil, "<%d.%d@localhost>", time.Now().UnixNano(), 42)
		return c.challenge, false, nil
	}
	user, digest, _ := strings.Cut(string(resp), " ")
	mac := hmac.New(md5.New, []byte(c.pass))
	mac.Write(c.challenge)
	if user != c.user || !hmac.Equal([]byte(digest), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		return nil, true, gosmtp.ErrAuthFailed
	}
	c.ok(user)
	return nil, true, nil
}

// server runs a go-smtp server on loopback and can stop and restart it on
// the same address.
type server struct {
	t        *testing.T
	b        *backend
	tls      *tls.Config
	implicit bool // TLS from the first byte (SMTPS) instead of STARTTLS
	addr     string

	mu   sync.Mutex
	srv  *gosmtp.Server
	l    net.Listener
	done chan struct{}
}

func startServer(t *testing.T, b *backend, tlsConfig *tls.Config) *server {
	t.Helper()
	s := &server{t: t, b: b, tls: tlsConfig, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.addr = l.Addr().String()
	srv := gosmtp.NewServer(s.b)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = s.tls == nil
	if s.implicit {
		l = tls.NewListener(l, s.tls)
	} else {
		srv.TLSConfig = s.tls
	}
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxRecipients = 10
	srv.ErrorLog = log.New(io.Discard, "", 0) // dropped sessions are what some tests do
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	s.mu.Lock()
	s.srv, s.l, s.done = srv, l, done
	s.mu.Unlock()
}

func (s *server) stop() {
	s.mu.Lock()
	srv, l, done := s.srv, s.l, s.done
	s.srv, s.l, s.done = nil, nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	// Serve may not have registered the listener with the server yet.
	_ = l.Close()
	<-done
}

// selfSigned returns a server TLS config for 127.0.0.1 and a client config
// trusting it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "herald test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// parsed is a stored message decoded with net/mail and mime/multipart.
type parsed struct {
	Header    mail.Header
	Subject   string
	Text      string
	HTML      string
	MediaType string
	Parts     []string // the media types of the parts, in order
}

func parse(t *testing.T, data []byte) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("ReadMessage: %v\n%s", err, data)
	}
	var p parsed
	p.Header = msg.Header
	dec := mime.WordDecoder{}
	if p.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("subject: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	p.MediaType = mt
	if !strings.HasPrefix(mt, "multipart/") {
		p.Text = decodeBody(t, msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
		p.Parts = []string{mt}
		return p
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("NextPart: %v", err)
		}
		pmt, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type: %v", err)
		}
		// multipart.Reader decodes quoted-printable itself.
		body := decodeBody(t, part.Header.Get("Content-Transfer-Encoding"), part)
		p.Parts = append(p.Parts, pmt)
		switch pmt {
		case "text/plain":
			p.Text = body
		case "text/html":
			p.HTML = body
		}
	}
	return p
}

func decodeBody(t *testing.T, cte string, r io.Reader) string {
	t.Helper()
	switch strings.ToLower(cte) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return string(b)
}
