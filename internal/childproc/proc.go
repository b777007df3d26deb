package childproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Proc is the test binary re-executed as a child process that runs one
// test (its role), with its stdout and stderr in a file.
type Proc struct {
	name string
	out  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs the test binary's test named test (e.g. "TestInstanceRole")
// as a child process with env added to this process's environment, its
// output in dir/name.log. The child dies with the test process
// (DieWithParent); the test's cleanup SIGKILLs it.
func Start(t testing.TB, dir, name, test string, env ...string) *Proc {
	t.Helper()
	p := &Proc{name: name, out: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	p.cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v", "-test.timeout=10m")
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	DieWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("childproc: start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	return p
}

// Name is the name Start was given.
func (p *Proc) Name() string { return p.name }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to the process, by its PID, and waits for it to end.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Wait waits at most timeout for the process to exit by itself and
// returns how it exited.
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("childproc: %s still running after %v", p.name, timeout)
	}
}

// Err is how the process exited: nil while it runs.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Output is what the process wrote so far on stdout and stderr.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}
