package template_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/notify/template"
)

func newSet(t testing.TB, opts ...template.Option) *template.Set {
	t.Helper()
	s, err := template.NewSet(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAdd(t testing.TB, s *template.Set, specs ...template.Spec) {
	t.Helper()
	for _, sp := range specs {
		if err := s.Add(sp); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLocaleFallback(t *testing.T) {
	s := newSet(t, template.DefaultLocale("en"))
	mustAdd(t, s,
		template.Spec{Name: "hello", Channel: "sms", Locale: "en", Text: "Hello"},
		template.Spec{Name: "hello", Channel: "sms", Locale: "de", Text: "Hallo"},
		template.Spec{Name: "hello", Channel: "sms", Locale: "de-CH", Text: "Grüezi"},
		template.Spec{Name: "hello", Channel: "sms", Locale: "zh-Hant", Text: "你好 (Hant)"},
		template.Spec{Name: "only-fr", Channel: "sms", Locale: "fr", Text: "Bonjour"},
	)
	tests := []struct {
		name, tmpl, locale string
		want, wantLocale   string
		wantErr            error
	}{
		{"exact", "hello", "de-CH", "Grüezi", "de-CH", nil},
		{"exact lower case", "hello", "de-ch", "Grüezi", "de-CH", nil},
		{"underscore", "hello", "de_CH", "Grüezi", "de-CH", nil},
		{"base language", "hello", "de-AT", "Hallo", "de", nil},
		{"base of three subtags", "hello", "de-Latn-AT", "Hallo", "de", nil},
		{"script prefix", "hello", "zh-Hant-TW", "你好 (Hant)", "zh-Hant", nil},
		{"default locale", "hello", "fr-FR", "Hello", "en", nil},
		{"empty locale", "hello", "", "Hello", "en", nil},
		{"default locale from regional", "hello", "en-GB", "Hello", "en", nil},
		{"no match at all", "only-fr", "de-CH", "", "", template.ErrNoTemplate},
		{"unknown name", "nope", "en", "", "", template.ErrNoTemplate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := s.Render(tc.tmpl, "sms", tc.locale, nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				for _, part := range []string{tc.tmpl, "sms", tc.locale} {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q does not name %q", err, part)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Text != tc.want || r.Locale != tc.wantLocale {
				t.Fatalf("got %+v, want text %q locale %q", r, tc.want, tc.wantLocale)
			}
		})
	}
	// Another channel is not a fallback.
	if _, err := s.Render("hello", "email", "en", nil); !errors.Is(err, template.ErrNoTemplate) {
		t.Fatalf("other channel: err = %v", err)
	}
}

func TestRegionalDefaultLocale(t *testing.T) {
	s := newSet(t, template.DefaultLocale("pt_br"))
	if s.DefaultLocale() != "pt-BR" {
		t.Fatalf("default locale %q", s.DefaultLocale())
	}
	mustAdd(t, s, template.Spec{Name: "x", Channel: "sms", Locale: "pt", Text: "Olá"})
	r, err := s.Render("x", "sms", "ja", nil)
	if err != nil || r.Text != "Olá" {
		t.Fatalf("got %+v, %v", r, err)
	}
	// A spec without locale is in the default locale.
	mustAdd(t, s, template.Spec{Name: "y", Channel: "sms", Text: "padrão"})
	if k := s.Keys(); k[len(k)-1] != (template.Key{Name: "y", Channel: "sms", Locale: "pt-BR"}) {
		t.Fatalf("keys %v", k)
	}
}

func TestEscaping(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s, template.Spec{
		Name: "x", Channel: "email",
		Subject: "Hi {{.Name}}",
		Text:    "Hi {{.Name}}",
		HTML:    `<p title="{{.Name}}">Hi {{.Name}}</p><a href="{{.URL}}">go</a><script>var n = {{.Name}};</script>`,
	})
	data := map[string]any{"Name": `<script>alert(1)</script>`, "URL": `javascript:alert(1)`}
	r, err := s.Render("x", "email", "en", data)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.HTML, "<script>alert") {
		t.Fatalf("HTML not escaped: %s", r.HTML)
	}
	for _, want := range []string{
		`Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>`,
		`title="&lt;script&gt;alert(1)&lt;/script&gt;"`,
		`href="#ZgotmplZ"`, // html/template's replacement for an unsafe URL
		`var n = "\u003cscript\u003ealert(1)\u003c/script\u003e";`,
	} {
		if !strings.Contains(r.HTML, want) {
			t.Errorf("HTML %s\nmissing %s", r.HTML, want)
		}
	}
	// Text parts are plain text: not escaped.
	if r.Text != "Hi <script>alert(1)</script>" || r.Subject != r.Text {
		t.Errorf("text parts: %+v", r)
	}
}

func TestTextFromHTML(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s,
		template.Spec{Name: "x", Channel: "email", Subject: "Order {{.ID}}",
			HTML: `<html><head><title>ignored</title><style>p{color:red}</style></head><body>
<h1>Order   {{.ID}}  confirmed</h1>
<p>Hello {{.Name}} &amp; welcome.</p>
<p><a href="{{.URL}}">Track it</a></p>
</body></html>`},
		template.Spec{Name: "both", Channel: "email", Text: "explicit", HTML: "<p>html</p>"},
	)
	r, err := s.Render("x", "email", "en", map[string]any{"ID": 42, "Name": "Ann <ann@example.com>", "URL": "https://shop.example/o/42?a=1&b=2"})
	if err != nil {
		t.Fatal(err)
	}
	want := "Order 42 confirmed\n\nHello Ann <ann@example.com> & welcome.\n\nTrack it (https://shop.example/o/42?a=1&b=2)"
	if r.Text != want {
		t.Fatalf("text:\n%q\nwant\n%q", r.Text, want)
	}
	if r.Subject != "Order 42" {
		t.Fatalf("subject %q", r.Subject)
	}
	r, err = s.Render("both", "email", "en", nil)
	if err != nil || r.Text != "explicit" || r.HTML != "<p>html</p>" {
		t.Fatalf("explicit text: %+v %v", r, err)
	}
}

func TestSubjectIsOneLine(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s, template.Spec{Name: "x", Channel: "email", Subject: "a\r\n  {{.}}\nBcc: x@example.com ", Text: "t"})
	r, err := s.Render("x", "email", "en", "b")
	if err != nil || r.Subject != "a b Bcc: x@example.com" {
		t.Fatalf("%q %v", r.Subject, err)
	}
}

func TestAddErrors(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s, template.Spec{Name: "dup", Channel: "sms", Locale: "en", Text: "x"})
	tests := []struct {
		name    string
		spec    template.Spec
		mention string
	}{
		{"no name", template.Spec{Channel: "sms", Text: "x"}, "required"},
		{"no channel", template.Spec{Name: "x", Text: "x"}, "required"},
		{"no body", template.Spec{Name: "x", Channel: "sms", Subject: "s"}, `"x"`},
		{"bad locale", template.Spec{Name: "x", Channel: "sms", Locale: "de CH", Text: "x"}, "de CH"},
		{"text parse", template.Spec{Name: "broken.text", Channel: "sms", Text: "{{.X"}, "broken.text"},
		{"subject parse", template.Spec{Name: "broken.subject", Channel: "sms", Subject: "{{if}}", Text: "x"}, "broken.subject"},
		{"html parse", template.Spec{Name: "broken.html", Channel: "email", HTML: "{{end}}"}, "broken.html"},
		{"html escape", template.Spec{Name: "broken.escape", Channel: "email", HTML: `<a href="{{.X}}>x</a>`}, "broken.escape"},
		{"unknown func", template.Spec{Name: "broken.func", Channel: "sms", Text: "{{nope .X}}"}, "broken.func"},
		{"duplicate", template.Spec{Name: "dup", Channel: "sms", Locale: "EN", Text: "y"}, "already"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Add(tc.spec)
			if !errors.Is(err, template.ErrInvalidSpec) {
				t.Fatalf("err = %v, want ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	s := newSet(t, template.Funcs(map[string]any{
		"fail": func() (string, error) { return "", errors.New("boom") },
	}))
	mustAdd(t, s,
		template.Spec{Name: "missing.key", Channel: "sms", Text: "{{.Nope}}"},
		template.Spec{Name: "missing.html", Channel: "email", HTML: "<p>{{.Nope}}</p>"},
		template.Spec{Name: "missing.subject", Channel: "email", Subject: "{{.Nope}}", Text: "x"},
		template.Spec{Name: "struct.field", Channel: "sms", Text: "{{.Nope}}"},
		template.Spec{Name: "bad.func", Channel: "sms", Text: "{{fail}}"},
		template.Spec{Name: "bad.arg", Channel: "sms", Text: "{{money .}}"},
	)
	tests := []struct {
		name string
		data any
		part string
	}{
		{"missing.key", map[string]any{"Other": 1}, "text"},
		{"missing.html", map[string]any{}, "html"},
		{"missing.subject", map[string]string{}, "subject"},
		{"struct.field", struct{ Other int }{}, "text"},
		{"bad.func", nil, "boom"},
		{"bad.arg", "12", "money"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := "sms"
			if strings.HasPrefix(tc.name, "missing.html") || strings.HasPrefix(tc.name, "missing.subject") {
				ch = "email"
			}
			_, err := s.Render(tc.name, ch, "en", tc.data)
			if !errors.Is(err, template.ErrRender) {
				t.Fatalf("err = %v, want ErrRender", err)
			}
			if !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.part) {
				t.Fatalf("error %q does not name %q and %q", err, tc.name, tc.part)
			}
		})
	}
}

func TestFuncs(t *testing.T) {
	at := time.Date(2026, 3, 4, 15, 4, 5, 0, time.UTC)
	s := newSet(t, template.Funcs(map[string]any{"shout": func(s string) string { return s + "!" }}))
	mustAdd(t, s, template.Spec{Name: "f", Channel: "sms",
		Text: `{{upper .Name}} {{lower .Name}} [{{trim .Pad}}] {{money .Cents}} {{date "2006-01-02" .At}} {{.At | date "15:04"}} {{date "Jan 2" .When}} {{shout "hey"}}`})
	r, err := s.Render("f", "sms", "en", map[string]any{
		"Name": "Ann", "Pad": "  x ", "Cents": 123456, "At": at, "When": "2026-12-24T10:00:00Z",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "ANN ann [x] 1234.56 2026-03-04 15:04 Dec 24 hey!"; r.Text != want {
		t.Fatalf("got %q want %q", r.Text, want)
	}
}

func TestMoney(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{0, "0.00"}, {5, "0.05"}, {-5, "-0.05"}, {99, "0.99"}, {100, "1.00"},
		{1234, "12.34"}, {-1234, "-12.34"}, {int64(-9223372036854775808), "-92233720368547758.08"},
		{uint64(18446744073709551615), "184467440737095516.15"}, {int8(-1), "-0.01"},
		{float64(1999), "19.99"}, {uint16(7), "0.07"},
	}
	for _, tc := range tests {
		got, err := template.Money(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Money(%v) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []any{12.5, "12", nil, 1e300} {
		if _, err := template.Money(bad); err == nil {
			t.Errorf("Money(%v): no error", bad)
		}
	}
}

func TestDate(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, in := range []any{at, &at, "2026-01-02T03:04:05Z"} {
		if got, err := template.Date(time.DateTime, in); err != nil || got != "2026-01-02 03:04:05" {
			t.Errorf("Date(%v) = %q, %v", in, got, err)
		}
	}
	var nilTime *time.Time
	for _, bad := range []any{nilTime, "yesterday", 42} {
		if _, err := template.Date(time.DateOnly, bad); err == nil {
			t.Errorf("Date(%v): no error", bad)
		}
	}
}

func TestOptions(t *testing.T) {
	bad := []template.Option{
		template.DefaultLocale(""),
		template.DefaultLocale("en US"),
		template.Funcs(map[string]any{"": strings.ToUpper}),
		template.Funcs(map[string]any{"a-b": strings.ToUpper}),
		template.Funcs(map[string]any{"x": "not a func"}),
		template.Funcs(map[string]any{"x": func() {}}),
		template.Funcs(map[string]any{"x": func() (int, int) { return 0, 0 }}),
		nil,
	}
	for i, o := range bad {
		if _, err := template.NewSet(o); !errors.Is(err, template.ErrInvalidOption) {
			t.Errorf("option %d: err = %v", i, err)
		}
	}
}

func TestPreviewAll(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s,
		template.Spec{Name: "p", Channel: "sms", Locale: "en", Text: "Hi {{.Name}}"},
		template.Spec{Name: "p", Channel: "email", Locale: "de", Subject: "Hallo {{.Name}}", HTML: "<b>Hallo {{.Name}}</b>"},
		template.Spec{Name: "p", Channel: "email", Locale: "en", Subject: "Hi {{.Name}}", HTML: "<b>Hi {{.Name}}</b>"},
		template.Spec{Name: "p", Channel: "push", Locale: "en", Text: "{{.Missing}}"},
		template.Spec{Name: "other", Channel: "sms", Locale: "en", Text: "x"},
	)
	sample := map[string]any{"Name": "Ann"}
	res, err := s.PreviewAll("p", sample)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, fmt.Sprintf("%s/%s:%s|%v", r.Key.Channel, r.Key.Locale, r.Rendered.Text, r.Err != nil))
	}
	want := []string{"email/de:Hallo Ann|false", "email/en:Hi Ann|false", "push/en:|true", "sms/en:Hi Ann|false"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if _, err := s.PreviewAll("none", sample); !errors.Is(err, template.ErrNoTemplate) {
		t.Fatalf("err = %v", err)
	}
	r, err := s.Preview("p", "email", "de-AT", sample)
	if err != nil || r.Subject != "Hallo Ann" || r.Locale != "de" {
		t.Fatalf("preview %+v %v", r, err)
	}
}

// TestConcurrent renders and adds from many goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	s := newSet(t)
	mustAdd(t, s, template.Spec{Name: "c", Channel: "email", Subject: "S {{.N}}", HTML: `<p>{{.N}} <a href="https://x.example/{{.N}}">x</a></p>`})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				r, err := s.Render("c", "email", "en-US", map[string]int{"N": i})
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("%d x (https://x.example/%d)", i, i); r.Text != want {
					errs <- fmt.Errorf("text %q want %q", r.Text, want)
					return
				}
			}
		})
		wg.Go(func() {
			for i := range 20 {
				if err := s.Add(template.Spec{Name: fmt.Sprintf("n%d-%d", g, i), Channel: "sms", Text: "x"}); err != nil {
					errs <- err
					return
				}
				_ = s.Keys()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(s.Keys()); n != 1+8*20 {
		t.Fatalf("%d keys", n)
	}
}

func BenchmarkRenderText(b *testing.B) {
	s := newSet(b)
	mustAdd(b, s, template.Spec{Name: "order.confirmed", Channel: "sms", Locale: "en",
		Text: "Hi {{.Name}}, order {{.ID}} of {{money .Total}} EUR is confirmed."})
	data := map[string]any{"Name": "Ann", "ID": "A-1001", "Total": 1999}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Render("order.confirmed", "sms", "en", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderEmail(b *testing.B) {
	s := newSet(b)
	mustAdd(b, s, template.Spec{Name: "order.confirmed", Channel: "email", Locale: "en",
		Subject: "Order {{.ID}} confirmed",
		Text:    "Hi {{.Name}}, order {{.ID}} of {{money .Total}} EUR is confirmed.",
		HTML:    `<p>Hi {{.Name}},</p><p>order <a href="https://shop.example/o/{{.ID}}">{{.ID}}</a> of {{money .Total}} EUR is confirmed.</p>`})
	data := map[string]any{"Name": "Ann", "ID": "A-1001", "Total": 1999}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Render("order.confirmed", "email", "de-CH", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderEmailTextFromHTML(b *testing.B) {
	s := newSet(b)
	mustAdd(b, s, template.Spec{Name: "order.confirmed", Channel: "email", Locale: "en",
		Subject: "Order {{.ID}} confirmed",
		HTML:    `<p>Hi {{.Name}},</p><p>order <a href="https://shop.example/o/{{.ID}}">{{.ID}}</a> of {{money .Total}} EUR is confirmed.</p>`})
	data := map[string]any{"Name": "Ann", "ID": "A-1001", "Total": 1999}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Render("order.confirmed", "email", "en", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderEmailParallel(b *testing.B) {
	s := newSet(b)
	mustAdd(b, s, template.Spec{Name: "order.confirmed", Channel: "email", Locale: "en",
		Subject: "Order {{.ID}} confirmed",
		Text:    "Hi {{.Name}}, order {{.ID}} of {{money .Total}} EUR is confirmed.",
		HTML:    `<p>Hi {{.Name}},</p><p>order <a href="https://shop.example/o/{{.ID}}">{{.ID}}</a> of {{money .Total}} EUR is confirmed.</p>`})
	data := map[string]any{"Name": "Ann", "ID": "A-1001", "Total": 1999}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Render("order.confirmed", "email", "en", data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
