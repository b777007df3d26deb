package natsserver

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// LaunchCluster is StartClusterConfig outside tests (herald bench scale):
// the same real nats-server processes of bin (Binary) on loopback ports,
// with their stores under dir, each dying with this process (Pdeathsig on
// Linux). The caller stops them with Close.
func LaunchCluster(bin, dir string, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("natsserver: cluster of %d nodes", cfg.Nodes)
	}
	if bin == "" {
		return nil, errors.New("natsserver: no nats-server binary")
	}
	if cfg.SyncInterval != "" && cfg.SyncInterval != "always" {
		if _, err := time.ParseDuration(cfg.SyncInterval); err != nil {
			return nil, fmt.Errorf("natsserver: sync interval %q: %w", cfg.SyncInterval, err)
		}
	}
	return launchCluster(nil, bin, dir, cfg, func(string, ...any) {})
}

// Close kills every node, by PID, and closes the cluster's own client. A
// cluster of StartCluster is closed by the test's cleanup.
func (c *Cluster) Close() { c.close() }

// CPUTime is the CPU time (user + system) the running server process has
// used so far, from /proc/<pid>/stat (Linux only; in USER_HZ ticks of
// 10 ms). It fails when the server is not running or /proc is not there.
func (s *Server) CPUTime() (time.Duration, error) {
	pid := s.PID()
	if pid == 0 {
		return 0, errors.New("natsserver: not running")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted from 3 (state) start after its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("natsserver: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("natsserver: /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("natsserver: /proc/%d/stat: %w", pid, err)
	}
	const tick = 10 * time.Millisecond // USER_HZ = 100
	return time.Duration(utime+stime) * tick, nil
}
