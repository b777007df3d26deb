//go:build !linux

package natsserver

import "os/exec"

// dieWithParent does nothing outside Linux: the test's cleanup kills the
// server.
func dieWithParent(cmd *exec.Cmd) {}
