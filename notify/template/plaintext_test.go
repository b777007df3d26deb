package template_test

import (
	"testing"

	"github.com/heraldhq/herald/notify/template"
)

func TestPlainText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"plain", "just text", "just text"},
		{"collapse whitespace", "  a \n\t b   c  ", "a b c"},
		{"inline tags", "<b>bold</b> and <i>it</i><span>alic</span>", "bold and italic"},
		{"entities", "Tom &amp; Jerry &lt;3 &quot;x&quot; &#39;y&#39; &euro;5 &#x263A;", `Tom & Jerry <3 "x" 'y' €5 ☺`},
		{"nbsp collapses", "a&nbsp;&nbsp;b", "a b"},
		{"paragraphs", "<p>one</p><p>two</p>", "one\n\ntwo"},
		{"br", "a<br>b<br/>c", "a\nb\nc"},
		{"div lines", "<div>a</div><div>b</div>", "a\nb"},
		{"headings", "<h1>Title</h1>body", "Title\n\nbody"},
		{"link", `see <a href="https://x.example/a?b=1&amp;c=2">the docs</a>.`, "see the docs (https://x.example/a?b=1&c=2)."},
		{"link text is url", `<a href="https://x.example/">https://x.example/</a>`, "https://x.example/"},
		{"link text is url without slash", `<a href="https://x.example/">https://x.example</a>`, "https://x.example"},
		{"mailto", `<a href="mailto:a@example.com">a@example.com</a> or <a href="mailto:a@example.com">mail us</a>`, "a@example.com or mail us (mailto:a@example.com)"},
		{"empty link text", `<a href="https://x.example/i"><img src="x.png"></a>`, "https://x.example/i"},
		{"image link alt", `<a href="https://x.example/i"><img src="x.png" alt="Logo"></a>`, "Logo (https://x.example/i)"},
		{"fragment link", `<a href="#top">Top</a>`, "Top"},
		{"javascript link", `<a href="JavaScript:alert(1)">click</a>`, "click"},
		{"link in sentence keeps spacing", `a <a href="https://x.example">b</a> c`, "a b (https://x.example) c"},
		{"head script style dropped", `<html><head><title>T</title><style>p{}</style></head><body><script>alert("x")</script>hi<noscript>no</noscript></body></html>`, "hi"},
		{"unclosed head", `<head><title>T</title><body>hi`, "hi"},
		{"list", "<ul><li>one</li><li>two</li></ul>after", "- one\n- two\n\nafter"},
		{"ordered list", `<ol start="3"><li>a</li><li>b</li></ol>`, "3. a\n4. b"},
		{"nested list", "<ul><li>a<ol><li>b</li></ol></li></ul>", "- a\n\n1. b"},
		{"table", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"},
		{"pre keeps whitespace", "<pre>a  b\n  c</pre>d", "a  b\n  c\n\nd"},
		{"hr", "a<hr>b", "a\n\n----\n\nb"},
		{"comment", "a<!-- secret -->b", "ab"},
		{"many blank lines", "<p></p><p></p><p>x</p><br><br><br><p>y</p>", "x\n\ny"},
		{"unbalanced", "</p></a>x<p>", "x"},
		{"email", `<!DOCTYPE html><html><body>
  <table role="presentation"><tr><td>
    <h2>Your order   is on its way</h2>
    <p>Hi Ann,<br>
       parcel <strong>#42</strong> left our warehouse.</p>
    <p><a href="https://shop.example/track/42" style="color:#00f">Track parcel</a></p>
  </td></tr></table>
</body></html>`, "Your order is on its way\n\nHi Ann,\nparcel #42 left our warehouse.\n\nTrack parcel (https://shop.example/track/42)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := template.PlainText(tc.in); got != tc.want {
				t.Fatalf("PlainText(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzPlainText(f *testing.F) {
	f.Add(`<p>a <a href="https://x">b</a></p><ul><li>c</ul>`)
	f.Add("<pre>\n x</pre><br/>&amp;")
	f.Fuzz(func(t *testing.T, in string) {
		out := template.PlainText(in)
		if len(out) > 0 && (out[0] == ' ' || out[0] == '\n' || out[len(out)-1] == ' ' || out[len(out)-1] == '\n') {
			t.Fatalf("untrimmed output %q", out)
		}
	})
}

func BenchmarkPlainText(b *testing.B) {
	in := `<p>Hi Ann,</p><p>order <a href="https://shop.example/o/A-1001">A-1001</a> of 19.99 EUR is confirmed.</p>`
	b.ReportAllocs()
	for b.Loop() {
		_ = template.PlainText(in)
	}
}
