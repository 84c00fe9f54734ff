// sidecar.go: starting and stopping the local file sidecar (REWIND_FILES=local).
//
// The sidecar snapshots and restores the action's files. The launcher talks
// to it directly; the proxy only starts it before the launcher, waits until
// it listens, and stops it on shutdown or when a later init replaces it.

package actionloop

import (
	"fmt"
	"net"
	"os"
	"time"
)

// DefaultSidecarWait is how long /init waits for the sidecar to listen.
const DefaultSidecarWait = 10 * time.Second

// sidecarPoll is the interval between readiness checks.
const sidecarPoll = 20 * time.Millisecond

// SidecarSpec describes how to start the sidecar.
type SidecarSpec struct {
	// Cmd is REWIND_SIDECAR_CMD, split on whitespace.
	Cmd []string
	// Address is REWIND_SIDECAR ("unix:/path" or "tcp:127.0.0.1:port").
	Address string
	// Env is the proxy's environment; ActionDir is added to it.
	Env []string
	// ActionDir is the absolute path of <root>/<N>, exported as
	// REWIND_ACTION_DIR.
	ActionDir string
	// Stdout and Stderr are handed to the sidecar as fds 1 and 2.
	Stdout, Stderr *os.File
	// Wait bounds the wait for the sidecar to listen.
	Wait time.Duration
}

// StartSidecar starts the sidecar in its own process group and waits until
// it accepts connections. On failure nothing is left running.
func StartSidecar(r *Reaper, spec SidecarSpec, grace time.Duration) (*Child, error) {
	network, address, err := parseAddress(spec.Address)
	if err != nil {
		return nil, fmt.Errorf("sidecar address %q: %v", spec.Address, err)
	}
	if network == "unix" {
		// A socket left by an earlier sidecar would look ready at once.
		if fi, err := os.Lstat(address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if err := os.Remove(address); err != nil {
				return nil, fmt.Errorf("cannot remove stale sidecar socket: %v", err)
			}
		}
	}
	argv := append(append([]string(nil), spec.Cmd...), "--driver", "local", "--listen", spec.Address)
	env := append(append([]string(nil), spec.Env...), "REWIND_ACTION_DIR="+spec.ActionDir)
	child, err := r.Start(ProcSpec{
		Argv:  argv,
		Env:   env,
		Files: []*os.File{nil, spec.Stdout, spec.Stderr},
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start the file sidecar: %v", err)
	}
	deadline := time.Now().Add(spec.Wait)
	for {
		if sidecarReady(network, address) {
			return child, nil
		}
		if child.Exited() {
			return nil, fmt.Errorf("the file sidecar exited with code %d before listening on %s", child.ExitCode(), spec.Address)
		}
		if time.Now().After(deadline) {
			child.Stop(grace)
			return nil, fmt.Errorf("the file sidecar did not listen on %s within %v", spec.Address, spec.Wait)
		}
		select {
		case <-child.Done():
		case <-time.After(sidecarPoll):
		}
	}
}

// sidecarReady reports whether the sidecar listens: for a unix socket, that
// the socket exists (connecting would use up one of its accepts); for TCP,
// that a connection succeeds.
func sidecarReady(network, address string) bool {
	if network == "unix" {
		fi, err := os.Stat(address)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	}
	c, err := net.DialTimeout(network, address, sidecarPoll)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
