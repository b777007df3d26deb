package mailaddr_test

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/examples/shop/service/mailaddr"
)

func TestCheckAcceptsBareAddresses(t *testing.T) {
	for _, s := range []string{
		"a@b.test",
		"c1@example.com",
		"first.last+tag@sub.example.co.uk",
		"o'brien@example.com",
		"a@b",
		"a@[192.0.2.1]",
		strings.Repeat("l", 64) + "@example.com",
		strings.Repeat("l", 64) + "@" + strings.Repeat("d", 254-65),
	} {
		if err := mailaddr.Check(s); err != nil {
			t.Errorf("Check(%q) = %v, want nil", s, err)
		}
	}
}

func TestCheckRefusesAllButOneBareAddress(t *testing.T) {
	cases := []struct{ name, in, why string }{
		{"empty", "", "is required"},
		{"display name", "Evil <evil@attacker.test>", "angle brackets or a display name"},
		{"quoted display name", `"Evil" <evil@attacker.test>`, "angle brackets or a display name"},
		{"angle brackets only", "<evil@attacker.test>", "angle brackets"},
		{"comma list", "a@b.test, c@d.test", "several addresses"},
		{"comma list without space", "a@b.test,c@d.test", "several addresses"},
		{"group", "friends:a@b.test;", "group syntax"},
		{"empty group", "undisclosed-recipients:;", "group syntax"},
		{"group of one", "g:a@b.test;", "group syntax"},
		// net/mail does not take IPv6 domain literals: refused, not as a group.
		{"IPv6 literal", "a@[IPv6:2001:db8::1]", "is not an e-mail address"},
		{"comment after", "a@b.test(boss)", "comment"},
		{"comment before", "(boss)a@b.test", "comment"},
		{"quoted local part", `"ab"@x.test`, "quoted local part"},
		{"CRLF header injection", "a@b.test\r\nBcc: victim@c.test", "line break"},
		{"LF", "a@b.test\nx", "line break"},
		{"CR", "a@b.test\r", "line break"},
		{"leading space", " a@b.test", "whitespace"},
		{"trailing space", "a@b.test ", "whitespace"},
		{"tab", "a@b.test\t", "whitespace"},
		{"NUL", "a@b.test\x00", "control character"},
		{"no at", "nope", "is not an e-mail address"},
		{"two ats", "a@b@c.test", "is not an e-mail address"},
		{"dot at end of local part", "a.@b.test", "is not an e-mail address"},
		{"too long", strings.Repeat("l", 64) + "@" + strings.Repeat("d", 254-64), "255 bytes long, more than the 254"},
		{"much too long", strings.Repeat("a", 1<<16) + "@b.test", "bytes long"},
		{"local part too long", strings.Repeat("l", 65) + "@example.com", "local part of 65 bytes, more than 64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := mailaddr.Check(c.in)
			if err == nil {
				t.Fatalf("Check(%q) = nil, want an error saying %q", c.in, c.why)
			}
			if !strings.Contains(err.Error(), c.why) {
				t.Fatalf("Check(%q) = %q, want it to say %q", c.in, err, c.why)
			}
			if len(c.in) > mailaddr.MaxLen && strings.Contains(err.Error(), c.in) {
				t.Fatalf("the error quotes an over-long input: %.80q…", err)
			}
		})
	}
}
