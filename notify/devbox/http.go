package devbox

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MarshalJSON encodes the entry for the devbox's JSON API. The message's
// Secret is never included, only whether one was set; a Payload that is
// JSON is embedded as is, any other as a string.
func (e Entry) MarshalJSON() ([]byte, error) {
	m := e.Message
	v := entryJSON{
		Seq: e.Seq, At: e.At, Provider: e.Provider,
		Channel: m.Channel, To: m.To, Subject: m.Subject, Text: m.Text, HTML: m.HTML,
		Key: m.Key, EventID: m.EventID, EventType: m.EventType, CorrelationID: m.CorrelationID,
		Signed: m.Secret != "",
	}
	if len(m.Payload) > 0 {
		if json.Valid(m.Payload) {
			v.Payload = json.RawMessage(m.Payload)
		} else {
			v.PayloadText = string(m.Payload)
		}
	}
	return json.Marshal(v)
}

type entryJSON struct {
	Seq           uint64          `json:"seq"`
	At            time.Time       `json:"at"`
	Provider      string          `json:"provider"`
	Channel       string          `json:"channel"`
	To            string          `json:"to"`
	Subject       string          `json:"subject,omitempty"`
	Text          string          `json:"text,omitempty"`
	HTML          string          `json:"html,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadText   string          `json:"payload_text,omitempty"`
	Key           string          `json:"key,omitempty"`
	EventID       string          `json:"event_id,omitempty"`
	EventType     string          `json:"event_type,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Signed        bool            `json:"signed,omitempty"`
}

// Handler returns an http.Handler that shows the box. Mount it under a
// prefix with http.StripPrefix. It serves:
//
//	GET    /                  an HTML page, newest first (query: channel, to, refresh=seconds, 0 to stop)
//	GET    /messages          JSON {"stats": …, "messages": [...]}, oldest first
//	                          (query: channel, to, key, event_id, event_type, correlation_id, after, limit)
//	GET    /messages/{seq}    one message as JSON
//	DELETE /messages          Clear
//
// Message content is escaped on the page, and HTML bodies are shown in
// sandboxed frames (no scripts) under a Content-Security-Policy that loads
// nothing from elsewhere.
func (b *Box) Handler() http.Handler {
	return &handler{box: b, page: template.Must(template.New("devbox").Funcs(template.FuncMap{
		"since": func(t time.Time) string { return b.now().Sub(t).Truncate(time.Second).String() },
		"payload": func(p []byte) string {
			var buf bytes.Buffer
			if json.Indent(&buf, p, "", "  ") == nil {
				return buf.String()
			}
			return string(p)
		},
	}).Parse(pageHTML))}
}

type handler struct {
	box  *Box
	page *template.Template
}

// ServeHTTP routes to the page and the JSON API.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "" {
		// Mounted with StripPrefix("/devbox") and asked for "/devbox":
		// redirect to "/devbox/" so the page's relative links resolve.
		// Only the request's own path is used: never another host.
		if u, err := url.ParseRequestURI(r.RequestURI); err == nil {
			p := u.EscapedPath()
			if strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "//") && !strings.HasSuffix(p, "/") {
				if u.RawQuery != "" {
					p += "/?" + u.RawQuery
				} else {
					p += "/"
				}
				http.Redirect(w, r, p, http.StatusFound)
				return
			}
		}
	}
	path := "/" + strings.Trim(r.URL.Path, "/")
	switch {
	case path == "/":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.servePage(w, r)
	case path == "/messages":
		if r.Method == http.MethodDelete {
			h.box.Clear()
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if !allow(w, r, http.MethodGet, http.MethodHead, http.MethodDelete) {
			return
		}
		f, err := filterFrom(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct {
			Stats    statsJSON `json:"stats"`
			Messages []Entry   `json:"messages"`
		}{statsOf(h.box.Stats(), h.box.IsDown()), nonNil(h.box.List(f))})
	case strings.HasPrefix(path, "/messages/"):
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		seq, err := strconv.ParseUint(strings.TrimPrefix(path, "/messages/"), 10, 64)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such message"})
			return
		}
		e, ok := h.box.Get(seq)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such message (evicted or never sent)"})
			return
		}
		writeJSON(w, http.StatusOK, e)
	default:
		http.NotFound(w, r)
	}
}

type statsJSON struct {
	Accepted uint64 `json:"accepted"`
	Failed   uint64 `json:"failed"`
	Held     int    `json:"held"`
	Capacity int    `json:"capacity"`
	Down     bool   `json:"down"`
}

func statsOf(s Stats, down bool) statsJSON {
	return statsJSON{Accepted: s.Accepted, Failed: s.Failed, Held: s.Held, Capacity: s.Capacity, Down: down}
}

func nonNil(es []Entry) []Entry {
	if es == nil {
		return []Entry{}
	}
	return es
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func filterFrom(r *http.Request) (Filter, error) {
	q := r.URL.Query()
	f := Filter{
		Channel: q.Get("channel"), To: q.Get("to"), Key: q.Get("key"),
		EventID: q.Get("event_id"), EventType: q.Get("event_type"), CorrelationID: q.Get("correlation_id"),
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return f, &paramError{"after", s}
		}
		f.After = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, &paramError{"limit", s}
		}
		f.Limit = n
	}
	return f, nil
}

type paramError struct{ name, value string }

// Error names the parameter and its value.
func (e *paramError) Error() string { return "bad " + e.name + " " + strconv.Quote(e.value) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Channel: q.Get("channel"), To: q.Get("to")}
	refresh := 5
	if s := q.Get("refresh"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 3600 {
			refresh = n
		}
	}
	entries := h.box.List(f)
	for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
		entries[i], entries[j] = entries[j], entries[i]
	}
	var buf bytes.Buffer
	err := h.page.Execute(&buf, pageData{
		Name: h.box.name, Stats: statsOf(h.box.Stats(), h.box.IsDown()),
		Filter: f, Refresh: refresh, Entries: entries,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// Nothing loads from elsewhere and nothing runs: message HTML is shown
	// in sandboxed srcdoc frames, which inherit this policy.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	_, _ = w.Write(buf.Bytes())
}

type pageData struct {
	Name    string
	Stats   statsJSON
	Filter  Filter
	Refresh int
	Entries []Entry
}

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<title>{{.Name}} · herald devbox</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; padding: 0 1em; color: #222; }
header p, .meta { color: #666; }
form { margin: 1em 0; }
article { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; margin: 1em 0; }
h2 { font-size: 1.05em; margin: .2em 0; }
.channel { display: inline-block; background: #eef; border-radius: 4px; padding: 0 .4em; font-size: .85em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: .5em; border-radius: 4px; }
iframe { width: 100%; height: 20em; border: 1px solid #eee; }
.down { color: #b00; font-weight: bold; }
</style>
</head>
<body>
<header>
<h1>{{.Name}}</h1>
<p>{{.Stats.Held}} held of {{.Stats.Capacity}} · {{.Stats.Accepted}} accepted · {{.Stats.Failed}} failed{{if .Stats.Down}} · <span class="down">DOWN</span>{{end}} · <a href="messages">JSON</a></p>
</header>
<form method="get">
<label>Channel <input name="channel" value="{{.Filter.Channel}}" size="8"></label>
<label>To <input name="to" value="{{.Filter.To}}" size="30"></label>
<label>Refresh (s) <input name="refresh" value="{{.Refresh}}" size="3"></label>
<button>Filter</button>
</form>
{{range .Entries}}{{$m := .Message}}
<article id="m{{.Seq}}">
<h2><span class="channel">{{$m.Channel}}</span> {{if $m.Subject}}{{$m.Subject}}{{else}}(no subject){{end}}</h2>
<p class="meta">#{{.Seq}} · to {{$m.To}} · {{.At.Format "2006-01-02 15:04:05 MST"}} ({{since .At}} ago) · {{.Provider}}{{if $m.EventType}} · {{$m.EventType}}{{end}}{{if $m.EventID}} · event {{$m.EventID}}{{end}}{{if $m.Key}} · key {{$m.Key}}{{end}}{{if $m.Secret}} · signed{{end}}</p>
{{if $m.HTML}}<iframe sandbox title="HTML body of message {{.Seq}}" srcdoc="{{$m.HTML}}"></iframe>{{end}}
{{if $m.Text}}<pre>{{$m.Text}}</pre>{{end}}
{{if $m.Payload}}<pre>{{payload $m.Payload}}</pre>{{end}}
</article>
{{else}}
<p>No messages yet.</p>
{{end}}
</body>
</html>
`
