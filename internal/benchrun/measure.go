package benchrun

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cpuTime is the CPU time (user + system) this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS returns freed memory to the OS and, on Linux, resets the
// process's peak resident set size (VmHWM) by writing 5 to
// /proc/self/clear_refs, so that peakRSS measures one system's run rather
// than the whole process's life. It reports whether the reset worked.
func resetPeakRSS() bool {
	runtime.GC()
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSS is the process's peak resident set size in bytes: VmHWM from
// /proc/self/status (since the last resetPeakRSS), or getrusage's maxrss (the
// peak over the process's life) where /proc is not there.
func peakRSS() int64 {
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss << 10 // kilobytes on Linux
}

// Meter measures one system's run: wall time, the process's CPU time and its
// peak RSS between Start and Stop.
type Meter struct {
	t0   time.Time
	cpu0 time.Duration
}

// StartMeter resets the peak RSS and starts the clocks.
func StartMeter() *Meter {
	resetPeakRSS()
	return &Meter{t0: time.Now(), cpu0: cpuTime()}
}

// Restart starts the clocks again without resetting the peak RSS: for a run
// whose set-up (filling an outbox, building messages) is not part of what is
// measured.
func (m *Meter) Restart() { m.t0, m.cpu0 = time.Now(), cpuTime() }

// Stop fills r's Events, Seconds, EventsPerSec, CPUPer100k and PeakRSS for
// events handled since Start (or Restart).
func (m *Meter) Stop(r *Result, events int) {
	elapsed := time.Since(m.t0)
	cpu := cpuTime() - m.cpu0
	r.Events = events
	r.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		r.EventsPerSec = float64(events) / elapsed.Seconds()
	}
	if events > 0 {
		r.CPUPer100k = cpu.Seconds() * 100000 / float64(events)
	}
	r.PeakRSS = peakRSS()
}

// Latencies collects end-to-end latencies from several goroutines.
type Latencies struct {
	mu sync.Mutex
	ds []time.Duration
}

// NewLatencies makes room for n latencies.
func NewLatencies(n int) *Latencies { return &Latencies{ds: make([]time.Duration, 0, n)} }

// Add records one latency and returns how many were recorded so far.
func (l *Latencies) Add(d time.Duration) int {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	n := len(l.ds)
	l.mu.Unlock()
	return n
}

// Len is how many latencies were recorded.
func (l *Latencies) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ds)
}

// Fill sets r's percentiles (and, with buckets, its histogram).
func (l *Latencies) Fill(r *Result, buckets []time.Duration) {
	l.mu.Lock()
	ds := slices.Clone(l.ds)
	l.mu.Unlock()
	fillLatency(r, ds, buckets)
}

func fillLatency(r *Result, ds []time.Duration, buckets []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	r.P50, r.P90, r.P99, r.Max = MillisOf(q(0.50)), MillisOf(q(0.90)), MillisOf(q(0.99)), MillisOf(ds[len(ds)-1])
	if len(buckets) == 0 {
		return
	}
	r.Histogram = make([]Bucket, len(buckets)+1)
	for i, b := range buckets {
		r.Histogram[i].Below = MillisOf(b)
	}
	for _, d := range ds {
		i, _ := slices.BinarySearch(buckets, d+1) // the first bucket whose bound exceeds d
		r.Histogram[i].Count++
	}
}

// Millis is a duration in milliseconds (in JSON and tables).
type Millis float64

// MillisOf converts d.
func MillisOf(d time.Duration) Millis { return Millis(float64(d) / float64(time.Millisecond)) }
