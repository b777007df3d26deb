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
// herald before this binding rule wrote values unencoded. So that its
// messages still decode, a '%' not followed by two hex digits is kept as it
// is, and so is a double quote that no second one closes.

// headerSafe reports whether b stands for itself in a header value.
func headerSafe(b byte) bool {
	return b > 0x20 && b < 0x7f && b != '"' && b != '%'
}

// encodeHeaderValue percent-encodes v for a binary-mode header. A value that
// needs no escape is returned as it is, without allocating.
func encodeHeaderValue(v string) string {
	n := 0
	for i := 0; i < len(v); i++ {
		if !headerSafe(v[i]) {
			n++
		}
	}
	if n == 0 {
		return v
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
