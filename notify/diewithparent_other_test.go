//go:build !linux

package notify_test

import "os/exec"

// dieWithParent does nothing outside Linux: the test's cleanup kills the
// child, and the child exits when it sees its parent gone.
func dieWithParent(cmd *exec.Cmd) {}
