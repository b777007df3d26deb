// Package analytics runs the shop's analytics service, which is written in
// JavaScript (analytics.mjs, wire.mjs, state.mjs beside this file) with only
// a CloudEvents SDK and the NATS client: it shows a service in another
// language joining a herald system. The Go here is what starts it (the
// shop's e2e test, herald demo) and reads its state; the service itself has
// no Go.
//
// The JavaScript files, package.json, package-lock.json and manifest.json
// are embedded, so an installed herald binary can run the service too:
// Prepare writes them into a directory and installs the npm dependencies
// there with `npm ci`.
package analytics

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldhq/herald/internal/childproc"
	"github.com/heraldhq/herald/internal/npmci"
)

// Files are the service's sources: its JavaScript, package.json,
// package-lock.json and manifest.json.
//
//go:embed package.json package-lock.json manifest.json analytics.mjs wire.mjs state.mjs
var Files embed.FS

// Service is the name the service announces itself under.
const Service = "analytics"

// ReadyLine starts the line the service prints on stdout once its
// consumers exist and its manifest is published.
const ReadyLine = "analytics: ready"

// SourceDir returns the directory of this package's sources when they are
// on disk (a checkout), and "" otherwise (an installed binary).
func SourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	dir := filepath.Dir(file)
	if _, err := os.Stat(filepath.Join(dir, "analytics.mjs")); err != nil {
		return ""
	}
	return dir
}

// Holds reports whether dir holds the embedded sources as they are. A
// checkout whose sources were edited since the binary was built does not:
// Prepare would write the older ones over them.
func Holds(dir string) bool {
	differ, err := differing(dir)
	return err == nil && len(differ) == 0
}

// differing returns the embedded files that dir lacks or holds otherwise.
func differing(dir string) ([]string, error) {
	var names []string
	err := fs.WalkDir(Files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want, err := Files.ReadFile(name)
		if err != nil {
			return err
		}
		if have, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(have, want) {
			names = append(names, name)
		}
		return nil
	})
	return names, err
}

// Prepare makes dir a runnable copy of the service: it writes the embedded
// files that differ from dir's (none in a checkout's own SourceDir), then
// installs the npm dependencies unless they are installed already. It
// needs npm, and the npm registry or npm's cache.
func Prepare(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("analytics: %w", err)
	}
	if err := writeSources(dir); err != nil {
		return fmt.Errorf("analytics: write the sources into %s: %w", dir, err)
	}
	if err := npmci.Install(ctx, dir, "cloudevents/package.json"); err != nil {
		return fmt.Errorf("analytics: %w", err)
	}
	return nil
}

// writeSources writes the embedded files that differ from dir's; new
// dependencies (package-lock.json) remove node_modules, to be installed
// again.
func writeSources(dir string) error {
	differ, err := differing(dir)
	if err != nil {
		return err
	}
	for _, name := range differ {
		if name == "package-lock.json" {
			if err := os.RemoveAll(filepath.Join(dir, "node_modules")); err != nil {
				return err
			}
		}
		data, err := Files.ReadFile(name)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Config says how to run the service.
type Config struct {
	// Dir holds the sources with their dependencies (Prepare).
	Dir string
	// NATS is the server URL (several comma-separated).
	NATS string
	// Prefix is herald's subject prefix (default "herald").
	Prefix string
	// State is the service's state file (its dedup set, counts and outbox).
	State string
	// Threshold is the number of confirmed orders that makes a product
	// trending (default 100).
	Threshold int
	// Log receives the service's stdout and stderr (default: discarded).
	Log io.Writer
	// ReadyTimeout bounds the wait for ReadyLine (default 30s).
	ReadyTimeout time.Duration
}

// Process is the running service, a child process owned by its starter:
// Stop or Kill ends it, by its PID; it also dies with its parent (Linux).
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	mu   sync.Mutex
	tail []byte // the last of its output, for error messages
}

// Start runs `node analytics.mjs` as cfg says and waits until it prints
// ReadyLine; if it exits first or the wait times out, it is killed and the
// error carries the end of its output.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "herald"
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = 100
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("analytics: %w", err)
	}
	cmd := exec.Command(node, "analytics.mjs", "--server", cfg.NATS, "--prefix", cfg.Prefix,
		"--state", cfg.State, "--threshold", strconv.Itoa(cfg.Threshold))
	cmd.Dir = cfg.Dir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	p := &Process{cmd: cmd, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("analytics: %w", err)
	}
	cmd.Stderr = &tailWriter{p: p, w: cfg.Log}
	childproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("analytics: start node: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		out := &tailWriter{p: p, w: cfg.Log}
		for sc.Scan() {
			line := sc.Text()
			_, _ = out.Write([]byte(line + "\n"))
			if strings.HasPrefix(line, ReadyLine) {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("analytics: node exited before it was ready (%v):\n%s", p.err, p.Output())
	case <-timer.C:
		p.Kill()
		return nil, fmt.Errorf("analytics: not ready after %v:\n%s", cfg.ReadyTimeout, p.Output())
	case <-ctx.Done():
		p.Kill()
		return nil, fmt.Errorf("analytics: %w", ctx.Err())
	}
}

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns the end of what the process wrote.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.tail)
}

// Stop asks the process to stop (SIGTERM: it finishes the event at hand and
// withdraws its instance from the catalog) and waits up to timeout, then
// kills it. It returns the process's exit error, if any, other than the
// kill.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		p.Kill()
		return fmt.Errorf("analytics: did not stop within %v after SIGTERM; killed", timeout)
	}
}

// Kill sends SIGKILL to the process and waits for it to exit.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tailWriter copies to w and keeps the last 8 KiB for Output.
type tailWriter struct {
	p *Process
	w io.Writer
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.p.mu.Lock()
	t.p.tail = append(t.p.tail, b...)
	if n := len(t.p.tail); n > 8<<10 {
		t.p.tail = t.p.tail[n-8<<10:]
	}
	// Under the lock: stdout and stderr are copied by two goroutines, and
	// Config.Log need not be safe for concurrent use.
	_, _ = t.w.Write(b)
	t.p.mu.Unlock()
	return len(b), nil
}

// State is the service's state file, as state.mjs writes it.
type State struct {
	Format     int               `json:"format"`
	Counts     map[string]int    `json:"counts"`     // product → confirmed orders that contain it
	Duplicates int               `json:"duplicates"` // events delivered again and not applied
	Rejected   int               `json:"rejected"`   // messages terminated: malformed, or a version it does not read
	Outbox     []json.RawMessage `json:"outbox"`     // trending events not yet acknowledged by JetStream
	Published  []string          `json:"published"`  // ce-id of every trending event published
	Seen       []string          `json:"seen"`       // ce-id of every order event applied
}

// ReadState reads the state file at path; a missing file is
// os.ErrNotExist (the service has applied nothing yet).
func ReadState(path string) (State, error) {
	var st State
	data, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("analytics: state %s: %w", path, err)
	}
	if st.Format != 1 {
		return st, fmt.Errorf("analytics: state %s: format %d, want 1", path, st.Format)
	}
	return st, nil
}

// ErrNoNode is returned by Available when node or npm is missing.
var ErrNoNode = errors.New("analytics: the Node.js service needs node and npm on PATH")

// Available reports whether the service can run here: node and npm are on
// PATH.
func Available() error {
	if err := npmci.Available(); err != nil {
		return fmt.Errorf("%w: %w", ErrNoNode, err)
	}
	return nil
}
