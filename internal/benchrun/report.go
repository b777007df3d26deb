package benchrun

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints results as an aligned table, one block per scenario.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tsystem\tevents\tevents/s\tp50 ms\tp90 ms\tp99 ms\tCPU s/100k\tpeak RSS MB\t")
	last := ""
	for _, r := range results {
		if last != "" && r.Scenario != last {
			fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t")
		}
		last = r.Scenario
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%.2f\t%.0f\t\n", r.Scenario, r.System, r.Events, r.EventsPerSec,
			ms(r.P50), ms(r.P90), ms(r.P99), r.CPUPer100k, float64(r.PeakRSS)/(1<<20))
	}
	return tw.Flush()
}

func ms(m Millis) string {
	switch {
	case m == 0:
		return "–"
	case m < 10:
		return fmt.Sprintf("%.2f", float64(m))
	default:
		return fmt.Sprintf("%.1f", float64(m))
	}
}

// WriteHistograms prints the latency histograms of results that have one.
func WriteHistograms(w io.Writer, results []Result) {
	for _, r := range results {
		if len(r.Histogram) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nlatency histogram, %s %s (%d events):\n", r.Scenario, r.System, r.Events)
		total := 0
		for _, b := range r.Histogram {
			total += b.Count
		}
		for i, b := range r.Histogram {
			frac := float64(b.Count) / float64(max(1, total))
			fmt.Fprintf(w, "  %-14s %8d %6.2f%% %s\n", bucketLabel(r.Histogram, i), b.Count, 100*frac, strings.Repeat("█", int(frac*50+0.5)))
		}
	}
}

func bucketLabel(hs []Bucket, i int) string {
	if i == len(hs)-1 {
		return fmt.Sprintf("≥ %s ms", trimMs(hs[i-1].Below))
	}
	if i == 0 {
		return fmt.Sprintf("< %s ms", trimMs(hs[i].Below))
	}
	return fmt.Sprintf("%s–%s ms", trimMs(hs[i-1].Below), trimMs(hs[i].Below))
}

func trimMs(m Millis) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", float64(m)), "0"), ".")
}

// Goal is one of the targets, judged from results of one run.
type Goal struct {
	Name     string // what is compared
	Target   string // e.g. "≥ 0.8×"
	Measured string // the figures and the ratio
	Met      bool
	Known    bool // false when the run lacked a system the goal needs
}

func find(results []Result, scenario, system string) (Result, bool) {
	i := slices.IndexFunc(results, func(r Result) bool {
		return r.Scenario == scenario && (r.System == system || strings.HasPrefix(system, "*") && strings.HasPrefix(r.System, system[1:]))
	})
	if i < 0 {
		return Result{}, false
	}
	return results[i], true
}

// Goals judges results against the goals.
func Goals(results []Result) []Goal {
	var gs []Goal
	ratio := func(name, target string, want float64, scenario, a, b string) {
		g := Goal{Name: name, Target: target}
		ra, okA := find(results, scenario, a)
		rb, okB := find(results, scenario, b)
		if okA && okB && rb.EventsPerSec > 0 {
			x := ra.EventsPerSec / rb.EventsPerSec
			g.Known, g.Met = true, x >= want
			g.Measured = fmt.Sprintf("%.2f× (%s / %s ev/s)", x, Human(ra.EventsPerSec), Human(rb.EventsPerSec))
		} else {
			g.Measured = "not measured in this run"
		}
		gs = append(gs, g)
	}
	ratio("bus: herald (SQLite) vs raw nats.go", "≥ 0.8×", 0.8, "bus", "herald-sqlite", "raw-nats.go")
	if _, ok := find(results, "bus", "herald-postgres"); ok {
		ratio("bus: herald (PostgreSQL) vs raw nats.go", "≥ 0.8×", 0.8, "bus", "herald-postgres", "raw-nats.go")
	}
	ratio("bus: herald (SQLite) vs Watermill default", "≥ 5×", 5, "bus", "herald-sqlite", "watermill-default")
	ratio("bus: herald (SQLite) vs Watermill tuned", "≥ 2×", 2, "bus", "herald-sqlite", "watermill-tuned")
	ratio("outbox: herald tx vs bare tx (SQLite)", "≥ 0.9×", 0.9, "outbox", "herald-tx-sqlite", "bare-tx-sqlite")
	if _, ok := find(results, "outbox", "herald-tx-postgres"); ok {
		ratio("outbox: herald tx vs bare tx (PostgreSQL)", "≥ 0.9×", 0.9, "outbox", "herald-tx-postgres", "bare-tx-postgres")
	}
	lat := Goal{Name: "latency: p50 and p99 at a fixed rate, embedded defaults", Target: "p50 < 1 ms, p99 < 5 ms at 10k ev/s", Measured: "not measured in this run"}
	if r, ok := find(results, "latency", "*herald-sqlite@"); ok {
		kept := r.Offered == 0 || r.Events*100 >= r.Offered*99 // the producer kept the rate
		lat.Known, lat.Met = true, r.P50 < 1 && r.P99 < 5 && kept && strings.HasSuffix(r.System, "@10.0k/s")
		lat.Measured = fmt.Sprintf("p50 %s ms, p99 %s ms at %s", ms(r.P50), ms(r.P99), strings.TrimPrefix(r.System, "herald-sqlite@"))
		if !kept {
			lat.Measured += fmt.Sprintf(" offered, %s/s achieved", Human(r.EventsPerSec))
		}
	}
	gs = append(gs, lat)
	rate := func(name, target string, want float64, scenario, system string) {
		g := Goal{Name: name, Target: target, Measured: "not measured in this run"}
		if r, ok := find(results, scenario, system); ok {
			g.Known, g.Met = true, r.EventsPerSec >= want
			g.Measured = fmt.Sprintf("%s ev/s", Human(r.EventsPerSec))
		}
		gs = append(gs, g)
	}
	rate("durable: durability mechanism on", "≥ 50k ev/s", 50000, "durable", "durability-on")
	rate("notify: notifications into SMTP", "≥ 10k/s", 10000, "notify", "herald-notify-sqlite")
	ratio("notify: herald vs raw go-mail", "≥ 0.8×", 0.8, "notify", "herald-notify-sqlite", "raw-go-mail")
	return gs
}

func verdict(g Goal) string {
	switch {
	case !g.Known:
		return "–"
	case g.Met:
		return "met"
	default:
		return "**not met**"
	}
}

// WriteGoals prints the goals as a plain table.
func WriteGoals(w io.Writer, gs []Goal) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "goal\ttarget\tmeasured\tverdict")
	for _, g := range gs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.Target, g.Measured, strings.Trim(verdict(g), "*"))
	}
	return tw.Flush()
}

// Machine describes where the run happened.
type Machine struct {
	CPU, OS, Go string
	Cores       int
	MemGiB      float64
	// LoadBefore and LoadAfter are the 1-minute load averages when the run
	// started and ended (other processes share the machine).
	LoadBefore, LoadAfter string
}

// LoadAverage is the 1-minute load average, or "" where unknown.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// ThisMachine describes this machine.
func ThisMachine() Machine {
	m := Machine{OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Cores: runtime.NumCPU(), CPU: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Fscanf(f, "MemTotal: %d kB", &kb); err == nil {
			m.MemGiB = float64(kb) / (1 << 20)
		}
		f.Close()
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out)) + " (bench built with " + runtime.Version() + ")"
	}
	return m
}

// Markers delimit the generated part of the markdown file, so that text
// written around it survives a new run.
const (
	MarkBegin = "<!-- herald bench: generated, do not edit by hand -->"
	MarkEnd   = "<!-- herald bench: end -->"
)

// Markdown renders results, goals and the run's description.
func Markdown(results []Result, m Machine, command, chart string, started time.Time, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintln(&b, MarkBegin)
	fmt.Fprintf(&b, "Run of %s UTC, %s in all, with\n\n```sh\n%s\n```\n\n", started.UTC().Format("2006-01-02 15:04"), took.Round(time.Second), command)
	fmt.Fprintf(&b, "Machine: %d cores (%s), %.0f GiB, %s, %s.", m.Cores, m.CPU, m.MemGiB, m.OS, m.Go)
	if m.LoadBefore != "" {
		fmt.Fprintf(&b, " 1-minute load average %s at the start, %s at the end.", m.LoadBefore, m.LoadAfter)
	}
	fmt.Fprint(&b, "\n\n")
	if chart != "" {
		fmt.Fprintf(&b, "![events/s per scenario and system](%s)\n\n", chart)
	}
	fmt.Fprintln(&b, "### Goals, as ratios measured in this run")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| goal | target | measured | verdict |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	for _, g := range Goals(results) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.Name, g.Target, g.Measured, verdict(g))
	}
	last := ""
	for _, r := range results {
		if r.Scenario != last {
			last = r.Scenario
			fmt.Fprintf(&b, "\n### %s\n\n", r.Scenario)
			fmt.Fprintln(&b, "| system | events | events/s | p50 ms | p90 ms | p99 ms | CPU s / 100k events | peak RSS MB | how |")
			fmt.Fprintln(&b, "|---|--:|--:|--:|--:|--:|--:|--:|---|")
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %.2f | %.0f | %s |\n", r.System, r.Events, r.EventsPerSec,
			ms(r.P50), ms(r.P90), ms(r.P99), r.CPUPer100k, float64(r.PeakRSS)/(1<<20), r.Note)
	}
	for _, r := range results {
		if len(r.Histogram) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\nLatency histogram of %s %s:\n\n| latency | events | share |\n|---|--:|--:|\n", r.Scenario, r.System)
		total := 0
		for _, h := range r.Histogram {
			total += h.Count
		}
		for i, h := range r.Histogram {
			fmt.Fprintf(&b, "| %s | %d | %.2f%% |\n", bucketLabel(r.Histogram, i), h.Count, 100*float64(h.Count)/float64(max(1, total)))
		}
	}
	fmt.Fprintln(&b, MarkEnd)
	return b.String()
}

// WriteMarkdown puts the generated part into path: between the markers of
// an existing file, or as a new file with a title.
func WriteMarkdown(path, generated string) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		s := string(old)
		i, j := strings.Index(s, MarkBegin), strings.Index(s, MarkEnd)
		if i >= 0 && j > i {
			return os.WriteFile(path, []byte(s[:i]+generated+strings.TrimPrefix(s[j+len(MarkEnd):], "\n")), 0o644)
		}
		return os.WriteFile(path, []byte(strings.TrimRight(s, "\n")+"\n\n"+generated), 0o644)
	case os.IsNotExist(err):
		return os.WriteFile(path, []byte("# Benchmarks\n\n"+generated), 0o644)
	default:
		return fmt.Errorf("markdown: %w", err)
	}
}
