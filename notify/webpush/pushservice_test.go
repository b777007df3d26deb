package webpush_test

// A push service stand-in: it checks what a real push service checks (the
// VAPID JWT's ES256 signature, audience, subject and expiry) and, acting as
// the browser too, decrypts the RFC 8291 aes128gcm payload with the
// subscription's private key, so the tests prove the payload arrives
// intact.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is the user agent side of a subscription.
type browser struct {
	key  *ecdh.PrivateKey
	auth []byte
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	if _, err := rand.Read(auth); err != nil {
		t.Fatal(err)
	}
	return &browser{key: k, auth: auth}
}

// subscription returns the PushSubscription JSON for endpoint.
func (b *browser) subscription(endpoint string) string {
	v := map[string]any{
		"endpoint":       endpoint,
		"expirationTime": nil,
		"keys": map[string]string{
			"p256dh": base64.RawURLEncoding.EncodeToString(b.key.PublicKey().Bytes()),
			"auth":   base64.RawURLEncoding.EncodeToString(b.auth),
		},
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// decrypt undoes RFC 8291 / RFC 8188 aes128gcm content coding.
func (b *browser) decrypt(body []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("short body")
	}
	salt := body[:16]
	rs := binary.BigEndian.Uint32(body[16:20])
	idlen := int(body[20])
	if rs < 18 || len(body) < 21+idlen {
		return nil, errors.New("bad header")
	}
	asPublic := body[21 : 21+idlen]
	records := body[21+idlen:]

	asKey, err := ecdh.P256().NewPublicKey(asPublic)
	if err != nil {
		return nil, fmt.Errorf("keyid is not the application server's P-256 key: %w", err)
	}
	shared, err := b.key.ECDH(asKey)
	if err != nil {
		return nil, err
	}
	// RFC 8291 §3.4: IKM = HKDF(auth_secret, ecdh_secret, key_info, 32).
	keyInfo := "WebPush: info\x00" + string(b.key.PublicKey().Bytes()) + string(asPublic)
	ikm, err := hkdf.Key(sha256.New, shared, b.auth, keyInfo, 32)
	if err != nil {
		return nil, err
	}
	// RFC 8188 §2.2, §2.3: CEK and NONCE from salt and IKM.
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	baseNonce, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	var out []byte
	for seq := uint64(0); len(records) > 0; seq++ {
		n := min(int(rs), len(records))
		rec := records[:n]
		records = records[n:]
		nonce := bytes.Clone(baseNonce)
		for i := range 8 {
			nonce[11-i] ^= byte(seq >> (8 * i))
		}
		plain, err := gcm.Open(nil, nonce, rec, nil)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", seq, err)
		}
		// Strip padding: trailing zeros, then the delimiter, 2 for the
		// last record and 1 for the others.
		i := len(plain) - 1
		for i >= 0 && plain[i] == 0 {
			i--
		}
		if i < 0 {
			return nil, fmt.Errorf("record %d: no delimiter", seq)
		}
		last := len(records) == 0
		if want := map[bool]byte{true: 2, false: 1}[last]; plain[i] != want {
			return nil, fmt.Errorf("record %d: delimiter %d, want %d", seq, plain[i], want)
		}
		out = append(out, plain[:i]...)
	}
	return out, nil
}

// vapidClaims are the JWT claims a push service checks.
type vapidClaims struct {
	Aud string `json:"aud"`
	Sub string `json:"sub"`
	Exp int64  `json:"exp"`
}

// verifyVAPID checks an Authorization header of the form
// "vapid t=<jwt>, k=<public key>" (RFC 8292): k must be wantKey, and the JWT
// an ES256 token signed by it for audience aud, not expired, and expiring
// within 24 hours.
func verifyVAPID(header string, wantKey []byte, aud string, now time.Time) (vapidClaims, error) {
	var c vapidClaims
	scheme, params, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "vapid") {
		return c, fmt.Errorf("scheme %q, want vapid", scheme)
	}
	var token, key string
	for p := range strings.SplitSeq(params, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch name {
		case "t":
			token = val
		case "k":
			key = val
		}
	}
	k, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil || !bytes.Equal(k, wantKey) {
		return c, fmt.Errorf("k=%q is not the VAPID public key", key)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), k)
	if err != nil {
		return c, err
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("JWT has %d parts", len(parts))
	}
	var hdr struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil || hdr.Alg != "ES256" {
		return c, fmt.Errorf("JWT header %+v, %v: want alg ES256", hdr, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return c, fmt.Errorf("JWT signature: %d bytes, %v", len(sig), err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return c, errors.New("JWT signature does not verify")
	}
	if err := decodeSegment(parts[1], &c); err != nil {
		return c, err
	}
	if c.Aud != aud {
		return c, fmt.Errorf("aud %q, want %q", c.Aud, aud)
	}
	exp := time.Unix(c.Exp, 0)
	if !exp.After(now) || exp.After(now.Add(24*time.Hour)) {
		return c, fmt.Errorf("exp %v not within 24h of %v", exp, now)
	}
	return c, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// pushed is one message the stand-in accepted and decrypted.
type pushed struct {
	Path    string
	Header  http.Header
	Claims  vapidClaims
	Payload []byte
}

// pushService is the stand-in. reply decides each answer; by default 201
// with a Location.
type pushService struct {
	t        *testing.T
	srv      *httptest.Server
	vapidKey []byte
	browsers map[string]*browser // by path

	mu       sync.Mutex
	requests int
	got      []pushed
	reply    func(w http.ResponseWriter)
}

func newPushService(t *testing.T, vapidPublic string) *pushService {
	t.Helper()
	k, err := base64.RawURLEncoding.DecodeString(vapidPublic)
	if err != nil {
		t.Fatal(err)
	}
	ps := &pushService{t: t, vapidKey: k, browsers: map[string]*browser{}}
	ps.srv = httptest.NewTLSServer(http.HandlerFunc(ps.serve))
	t.Cleanup(ps.srv.Close)
	return ps
}

// subscribe makes a browser subscription on the stand-in.
func (ps *pushService) subscribe(t *testing.T, id string) (sub string, b *browser) {
	b = newBrowser(t)
	ps.mu.Lock()
	ps.browsers["/push/"+id] = b
	ps.mu.Unlock()
	return b.subscription(ps.srv.URL + "/push/" + id), b
}

func (ps *pushService) setReply(f func(w http.ResponseWriter)) {
	ps.mu.Lock()
	ps.reply = f
	ps.mu.Unlock()
}

func (ps *pushService) serve(w http.ResponseWriter, r *http.Request) {
	ps.mu.Lock()
	ps.requests++
	b := ps.browsers[r.URL.Path]
	reply := ps.reply
	ps.mu.Unlock()
	fail := func(status int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		ps.t.Errorf("push service: %s", msg)
		http.Error(w, msg, status)
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "method %s", r.Method)
		return
	}
	if b == nil {
		fail(http.StatusNotFound, "no subscription at %s", r.URL.Path)
		return
	}
	claims, err := verifyVAPID(r.Header.Get("Authorization"), ps.vapidKey, ps.srv.URL, time.Now())
	if err != nil {
		fail(http.StatusUnauthorized, "VAPID: %v", err)
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "aes128gcm" {
		fail(http.StatusUnsupportedMediaType, "Content-Encoding %q", ce)
		return
	}
	if r.Header.Get("TTL") == "" {
		fail(http.StatusBadRequest, "no TTL")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail(http.StatusBadRequest, "body: %v", err)
		return
	}
	payload, err := b.decrypt(body)
	if err != nil {
		fail(http.StatusBadRequest, "decrypt: %v", err)
		return
	}
	ps.mu.Lock()
	ps.got = append(ps.got, pushed{Path: r.URL.Path, Header: r.Header.Clone(), Claims: claims, Payload: payload})
	n := len(ps.got)
	ps.mu.Unlock()
	if reply != nil {
		reply(w)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("%s/message/%d", ps.srv.URL, n))
	w.WriteHeader(http.StatusCreated)
}

func (ps *pushService) received() []pushed {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]pushed(nil), ps.got...)
}

func (ps *pushService) requestCount() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.requests
}
