package envelope

import "strings"

// The CloudEvents NATS protocol binding (binary mode, "NATS Header Values")
// has header values percent-encoded: space, double quote, percent and every
// byte outside printable ASCII (U+0021-U+007E) become %XY, upper-case hex,
// one per UTF-8 byte. A receiver first undoes double-quoted strings
// (RFC 7230 section 3.2.6, backslash escapes inside them) and then does one
// round of percent-decoding, accepting lower-case hex and needless escapes
// and rejecting what is not UTF-8 afterwards.
//
// herald before this binding rule wrote values unencoded, and content-type
// rather than ce-datacontenttype: its messages are recognised by that and
// read verbatim (attributes.olderHerald). For values of other senders that
// were not encoded, a '%' not followed by two hex digits is kept as it is,
// and so is a double quote that no second one closes.

// headerSafe reports whether b stands for itself in a header value.
func headerSafe(b byte) bool {
	return b > 0x20 && b < 0x7f && b != '"' && b != '%'
}

// needsEncoding reports whether some byte of v needs an escape. It looks
// at 8 bytes at a time (herald's attributes are mostly long ASCII ids):
// for each test the high bit of a byte of bad is set when some byte fails
// it — below 0x21, 0x7F or above, '"', '%' — exactly when one does (the
// borrows and carries that can mark a wrong byte only follow a true one).
func needsEncoding(v string) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(v); i += 8 {
		b := v[i : i+8]
		w := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		q, p := w^(ones*'"'), w^(ones*'%')
		bad := (w-ones*0x21)&^w | // below 0x21
			(w + ones) | w | // 0x7F and above
			(q-ones)&^q | (p-ones)&^p // '"', '%'
		if bad&highs != 0 {
			return true
		}
	}
	for ; i < len(v); i++ {
		if !headerSafe(v[i]) {
			return true
		}
	}
	return false
}

// encodeHeaderValue percent-encodes v for a binary-mode header. A value that
// needs no escape is returned as it is, without allocating.
func encodeHeaderValue(v string) string {
	if !needsEncoding(v) {
		return v
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if !headerSafe(v[i]) {
			n++
		}
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(v) + 2*n)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if headerSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// decodeHeaderValue undoes the binding's quoting and percent-encoding of a
// header value. A value with neither '%' nor '"' is returned as it is,
// without allocating. The caller checks that the result is UTF-8 (an
// overlong encoding such as %C0%A0 is not).
func decodeHeaderValue(v string) string {
	if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '"') < 0 {
		return v
	}
	if strings.IndexByte(v, '"') >= 0 {
		v = unquoteHeaderValue(v)
	}
	if strings.IndexByte(v, '%') >= 0 {
		var b strings.Builder
		b.Grow(len(v))
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
				b.WriteByte(unhex(v[i+1])<<4 | unhex(v[i+2]))
				i += 2
				continue
			}
			b.WriteByte(c)
		}
		v = b.String()
	}
	return v
}

// unquoteHeaderValue replaces every double-quoted string of v by its
// contents, backslash escapes undone. A quote that nothing closes is kept.
func unquoteHeaderValue(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '"' {
			b.WriteByte(v[i])
			continue
		}
		end, inner, ok := quotedString(v, i)
		if !ok {
			b.WriteString(v[i:])
			break
		}
		b.WriteString(inner)
		i = end
	}
	return b.String()
}

// quotedString reads the quoted string that starts at v[start] ('"'): it
// returns the index of its closing quote and its contents, or false if no
// quote closes it.
func quotedString(v string, start int) (end int, inner string, ok bool) {
	var b strings.Builder
	for i := start + 1; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			return i, b.String(), true
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		default:
			b.WriteByte(c)
		}
	}
	return 0, "", false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
