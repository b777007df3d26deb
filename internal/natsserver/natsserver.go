// Package natsserver builds and runs an external nats-server process for
// tests: the version go.mod pins, with JetStream on a spare loopback port,
// fsyncing every write, so that tests can SIGKILL and restart a real broker.
// Binary and LaunchCluster do the same outside tests, for herald bench
// scale.
//
// Build compiles the server once per test binary (and reuses a binary cached
// under os.UserCacheDir()/herald-test across runs). Start runs it; the test's
// cleanup kills it by PID. A server this package did not start (say the one
// of the machine on 127.0.0.1:4222) is never touched: Start refuses a port
// that already accepts connections, and checks the server that answers is
// its own.
package natsserver

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/heraldhq/herald/internal/childproc"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Module is the module path of the server.
const Module = "github.com/nats-io/nats-server/v2"

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Build returns the path of a nats-server binary of the version go.mod pins,
// building it with `go build` the first time in this test binary, unless a
// binary of that version is cached under
// os.UserCacheDir()/herald-test/nats-server-<version>. It skips the test in
// -short mode and fails it if the build fails.
func Build(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no external nats-server")
	}
	bin, err := Binary()
	if err != nil {
		t.Fatalf("natsserver: %v", err)
	}
	return bin
}

// Binary is Build outside tests (herald bench scale): the path of the
// nats-server binary of the version go.mod pins, cached or built with the
// go command the first time in this process. It needs the go command and
// herald's source (the directory of this package, or the working
// directory inside the module).
func Binary() (string, error) {
	buildOnce.Do(func() { buildBin, buildErr = build() })
	return buildBin, buildErr
}

// version returns the version of the server module this module requires,
// from `go list -m` run in this module (test binaries carry no dependency
// list in their build information).
func version() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}", Module)
	cmd.Dir = moduleDir()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s: %w", Module, err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("go list -m %s: no version", Module)
	}
	return v, nil
}

// moduleDir is a directory inside this module, so that the go command uses
// its go.mod whatever the test binary's working directory: the directory of
// this source file when it exists, else the working directory.
func moduleDir() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		if dir := filepath.Dir(file); isDir(dir) {
			return dir
		}
	}
	return ""
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func build() (string, error) {
	v, err := version()
	if err != nil {
		return "", err
	}
	name := "nats-server-" + v
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	var dirs []string
	if c, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(c, "herald-test"))
	}
	dirs = append(dirs, filepath.Join(os.TempDir(), "herald-test-"+strconv.Itoa(os.Getuid())))
	var errs []error
	for _, dir := range dirs {
		bin := filepath.Join(dir, name)
		if ok(bin, v) {
			return bin, nil
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		// Build next to the target and rename, so that concurrent test
		// binaries never run a half-written file.
		tmp, err := os.CreateTemp(dir, name+".tmp-*")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tmp.Close()
		cmd := exec.Command("go", "build", "-o", tmp.Name(), Module)
		cmd.Dir = moduleDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			os.Remove(tmp.Name())
			return "", fmt.Errorf("go build %s: %v\n%s", Module, err, out)
		}
		if err := os.Rename(tmp.Name(), bin); err != nil {
			os.Remove(tmp.Name())
			errs = append(errs, err)
			continue
		}
		if !ok(bin, v) {
			return "", fmt.Errorf("%s built, but `%s --version` does not report %s", bin, bin, v)
		}
		return bin, nil
	}
	return "", fmt.Errorf("no writable directory for the nats-server binary: %w", errors.Join(errs...))
}

// ok reports whether bin runs and is nats-server version v.
func ok(bin, v string) bool {
	if _, err := os.Stat(bin); err != nil {
		return false
	}
	out, err := exec.Command(bin, "--version").Output()
	return err == nil && strings.Contains(string(out), v)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("natsserver: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Server is one nats-server process (restartable) on a fixed port and store
// directory.
type Server struct {
	t    testing.TB // nil outside tests
	js   string     // the configuration's JetStream block
	bin  string
	dir  string
	port int
	conf string
	logf string
	name string
	// domain is the JetStream domain, leafPort the leafnode port (0: none).
	domain   string
	leafPort int

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
	runs int
}

// StartupTimeout bounds how long Start and Restart wait for the server to
// accept connections (JetStream recovers its streams before that).
var StartupTimeout = 60 * time.Second

// Start runs the nats-server of Build with JetStream in dir (its store; the
// configuration file and the server's log go there too), listening on
// 127.0.0.1:port (0: a free port), fsyncing every write
// (jetstream { sync_interval: always }), and waits until it accepts
// connections. The test's cleanup kills it.
func Start(t testing.TB, dir string, port int) *Server {
	t.Helper()
	bin := Build(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("natsserver: %v", err)
	}
	s := newServer(t, bin, dir)
	if err := s.writeConf(""); err != nil {
		t.Fatalf("natsserver: %v", err)
	}
	t.Cleanup(s.Kill)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s.port = port
		if port == 0 {
			s.port = FreePort(t)
		}
		s.name = fmt.Sprintf("herald-test-%d-%d", os.Getpid(), s.port)
		if err = s.start(); err == nil || port != 0 {
			break
		}
	}
	if err != nil {
		t.Fatalf("natsserver: %v", err)
	}
	return s
}

// jetstreamConf is the JetStream block of every server's configuration.
const jetstreamConf = "jetstream {\n  sync_interval: always\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}\n"

func newServer(t testing.TB, bin, dir string) *Server {
	return &Server{t: t, js: jetstreamConf, bin: bin, dir: dir,
		conf: filepath.Join(dir, "nats-server.conf"),
		logf: filepath.Join(dir, "nats-server.log"),
	}
}

// writeConf writes the configuration file: JetStream (in s.domain, if
// set), then extra.
func (s *Server) writeConf(extra string) error {
	js := s.js
	if s.domain != "" {
		js = strings.Replace(js, "{\n", "{\n  domain: "+strconv.Quote(s.domain)+"\n", 1)
	}
	return os.WriteFile(s.conf, []byte(js+extra), 0o600)
}

// URL is the server's client URL.
func (s *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// LeafAddr is the address (127.0.0.1:port) on which the server accepts
// leafnode connections, or "" if it accepts none.
func (s *Server) LeafAddr() string {
	if s.leafPort == 0 {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(s.leafPort)
}

// Port is the server's client port.
func (s *Server) Port() int { return s.port }

// Name is the server's name (server_name), as JetStream reports it, e.g.
// as a stream's leader.
func (s *Server) Name() string { return s.name }

// Dir is the server's store directory.
func (s *Server) Dir() string { return s.dir }

// PID is the process id of the running server, 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log returns what the server wrote to its log in every run so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logf)
	return string(b)
}

// Kill sends SIGKILL to the server process, by PID, and waits for it to
// exit. Killing a server that is not running does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd, s.exit = nil, nil
}

// Restart kills the server if it runs, then starts it again on the same
// port and store directory and waits until it accepts connections. It fails
// the test if the server does not come back.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	deadline := time.Now().Add(StartupTimeout)
	for {
		// The port can be briefly unavailable right after the kill.
		if err = s.start(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("natsserver: restart: %v", err)
	}
}

// start runs the server and waits until the server answering on the port
// is this one.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	addr := "127.0.0.1:" + strconv.Itoa(s.port)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("something already listens on %s; not starting a second server there", addr)
	}
	logf, err := os.OpenFile(s.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	s.runs++
	fmt.Fprintf(logf, "=== natsserver: run %d on %s at %s\n", s.runs, addr, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, "-c", s.conf, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-js", "-sd", s.dir, "-n", s.name)
	cmd.Stdout, cmd.Stderr = logf, logf
	childproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	deadline := time.Now().Add(StartupTimeout)
	for {
		select {
		case <-exit:
			return fmt.Errorf("nats-server exited at start (log %s):\n%s", s.logf, tail(s.logf))
		default:
		}
		if s.answers(addr) {
			s.cmd, s.exit = cmd, exit
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exit
			return fmt.Errorf("nats-server does not accept connections on %s after %v:\n%s", addr, StartupTimeout, tail(s.logf))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers reports whether the server on addr is this one, by the name in
// the INFO line every NATS server sends first.
func (s *Server) answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		return false
	}
	var info struct {
		Name      string `json:"server_name"`
		JetStream bool   `json:"jetstream"`
	}
	if json.Unmarshal([]byte(strings.TrimSpace(line[5:])), &info) != nil {
		return false
	}
	return info.Name == s.name && info.JetStream
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
