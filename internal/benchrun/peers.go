package benchrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// PeersModule is the module path of the bench module, which holds the peers
// that herald's own module must not depend on (Watermill) and the chart.
const PeersModule = "github.com/heraldhq/herald/bench"

// PeerSystems are the bench module's systems in the bus scenario.
var PeerSystems = []string{"watermill-default", "watermill-tuned"}

// ErrNoPeersSource is returned when the bench module's source is not found.
var ErrNoPeersSource = errors.New("the bench module (bench/go.mod) was not found")

// Peers runs the bench module's program: its systems in a scenario against
// a nats-server URL (one child process per system, printing its Result as
// JSON), and the chart.
type Peers struct {
	bin      string
	progress io.Writer
}

// FindPeersSource returns the bench module's directory: bench/ of the first
// directory at or above start whose bench/go.mod declares PeersModule.
func FindPeersSource(start string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", err
	}
	start = dir
	for {
		cand := filepath.Join(dir, "bench")
		if b, err := os.ReadFile(filepath.Join(cand, "go.mod")); err == nil && strings.Contains(string(b), "module "+PeersModule+"\n") {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w at or above %s: run from a herald source checkout or pass --peers-src", ErrNoPeersSource, start)
		}
		dir = parent
	}
}

// BuildPeers builds the bench module's program from src into dir with the
// go command. progress receives the children's progress bars (nil for none).
func BuildPeers(ctx context.Context, src, dir string, progress io.Writer) (*Peers, error) {
	bin := filepath.Join(dir, "herald-bench-peers")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/peers")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the bench module's peers in %s: %w\n%s", src, err, out)
	}
	return &Peers{bin: bin, progress: progress}, nil
}

// exec runs the program with args and returns its standard output; its
// standard error goes to the progress writer and, on failure, into the
// error.
func (p *Peers) exec(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.bin, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if p.progress != nil {
		cmd.Stderr = io.MultiWriter(&errb, p.progress)
	}
	out, err := cmd.Output()
	if err != nil {
		tail := errb.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(p.bin), strings.Join(args, " "), err, tail)
	}
	return out, nil
}

// run measures each peer system in a child process against the server at
// url. The child measures its own CPU time; the CPU the server (in this
// process) spent meanwhile is added, so CPU s/100k covers the same work as
// the in-process systems'. Peak RSS is the child's alone.
func (p *Peers) run(ctx context.Context, r *runner, scenario, url string, n int) error {
	for _, sys := range PeerSystems {
		if !r.wants(sys) {
			continue
		}
		args := []string{"run", "--scenario", scenario, "--system", sys, "--nats", url, "--events", strconv.Itoa(n)}
		if p.progress == nil {
			args = append(args, "--quiet")
		}
		cpu0 := cpuTime()
		out, err := p.exec(ctx, args...)
		if err != nil {
			return err
		}
		server := cpuTime() - cpu0
		var res Result
		if err := json.Unmarshal(out, &res); err != nil {
			return fmt.Errorf("%s: read its result: %w (%q)", sys, err, out)
		}
		if res.Events > 0 {
			res.CPUPer100k += server.Seconds() * 100000 / float64(res.Events)
		}
		res.Note = strings.TrimPrefix(res.Note+"; CPU includes the nats-server's; peak RSS is the peer's process alone", "; ")
		r.add(res)
	}
	return nil
}

// Chart draws results as a PNG at out.
func (p *Peers) Chart(ctx context.Context, results []Result, out string) error {
	f, err := os.CreateTemp(filepath.Dir(p.bin), "results-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := json.NewEncoder(f).Encode(results); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	_, err = p.exec(ctx, "chart", "--in", f.Name(), "--out", abs)
	return err
}
