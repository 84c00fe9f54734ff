// executor.go: the lifecycle of one launcher process (bin/exec).
//
// The launcher speaks the ActionLoop protocol: one JSON line in on its stdin,
// one JSON line out on fd 3, an optional {"ok": true} ack on fd 3 at start.
// Its stdout/stderr are the proxy's own fds, inherited rather than copied, so
// the action's log lines reach the container log unchanged and in order.

package actionloop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// The launcher protocol, in one place. Exit codes follow gunicorn's
// WORKER_BOOT_ERROR / APP_LOAD_ERROR idea: they let the proxy tell a bad
// action from a crashed request from an unsafe state.
const (
	// Sentinel ends every activation's log on stdout and on stderr; the
	// invoker collects log lines up to two of them.
	Sentinel = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"

	// ExitLoadError is the launcher's exit code when the action could not
	// be loaded (import error, missing entry point). At /init it is an
	// ordinary start failure (502).
	ExitLoadError = 3

	// ExitRewindFailed is the launcher's exit code when a rewind could not
	// be completed, so the state may be dirty. The proxy fails closed: it
	// never restarts the launcher and answers every later /run with 503.
	ExitRewindFailed = 5

	// StatusKey and StatusExited form the launcher's status line
	// ` {"rewind_status": "exited"}` on fd 3 (with its leading space): the
	// process that ran the request died, but the launcher survived and
	// serves the next request.
	StatusKey    = "rewind_status"
	StatusExited = "exited"
)

// Start-failure messages, kept identical to the upstream proxy's.
const (
	msgExitedAtInit = "Command exited abruptly during initialization."
	msgBadAck       = "The action did not initialize properly."
	msgExited       = "command exited"
)

// noAckWait is how long a launcher that does not ack must survive to count
// as started (upstream DefaultTimeoutStart).
const noAckWait = 5 * time.Millisecond

// lineGrace is how long to wait for a line the launcher may have written
// just before it exited, once its exit has been seen.
const lineGrace = 50 * time.Millisecond

// errExited means the launcher exited or closed fd 3.
var errExited = errors.New(msgExited)

// LaunchSpec is everything needed to (re)start a launcher; a restart after
// a crash reuses it unchanged.
type LaunchSpec struct {
	// Argv is the command: bin/exec, or the proxy's __rewind_launch role.
	Argv []string
	// Env is the launcher's complete environment.
	Env []string
	// Credential, if set, is the user the launcher runs as.
	Credential *syscall.Credential
	// AmbientCaps are capabilities the launcher keeps across exec (identity.go).
	AmbientCaps []uintptr
	// Stdout and Stderr are handed to the launcher as fds 1 and 2.
	Stdout, Stderr *os.File
	// WaitForAck makes Start wait for the ack line instead of 5 ms.
	WaitForAck bool
	// Sidecar, if set, is the local sidecar's address: each start connects to
	// it and hands the connection to the launcher as fd 4, so the launcher
	// never needs access to the root-only socket (and the function cannot).
	Sidecar string
	// OnStatus, if set, receives the launcher's report from its ack and
	// every line of the status pipe (status.go). Every start passes the
	// pipe's write end as the next fd and names it in REWIND_STATUS_FD.
	OnStatus func(StatusMessage)
}

// SidecarFD is the launcher's descriptor of its pre-connected sidecar socket.
const SidecarFD = 4

// dialSidecar connects to the sidecar and returns the connection as a file.
func dialSidecar(addr string) (*os.File, error) {
	network, address, err := parseAddress(addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the file sidecar: %v", err)
	}
	defer c.Close()
	type filer interface{ File() (*os.File, error) }
	fc, ok := c.(filer)
	if !ok {
		return nil, fmt.Errorf("cannot pass a %s connection to the launcher", network)
	}
	return fc.File()
}

// lineResult is one line read from fd 3, or the error that ended reading.
type lineResult struct {
	line []byte
	err  error
}

// Executor is one running launcher.
type Executor struct {
	child *Child
	stdin *os.File
	out   *os.File
	// logs relays the launcher's stdout and stderr (sentinels escaped).
	logs logRelays
	// lines carries fd-3 lines from the single reader goroutine; closed
	// after the first read error.
	lines    chan lineResult
	quit     chan struct{}
	stopOnce sync.Once
	// broken is set once the launcher exited or closed fd 3; only the
	// goroutine holding the server's lock touches it.
	broken bool
	// statusDone is closed when every writer of the status pipe is gone.
	statusDone chan struct{}
}

// StartExecutor starts the launcher described by spec and, per the
// protocol, waits for its ack or for it to survive 5 ms.
func StartExecutor(r *Reaper, spec LaunchSpec, grace time.Duration) (*Executor, error) {
	// Everything opened so far is closed again if a later step fails.
	var opened []io.Closer
	fail := func(err error) (*Executor, error) {
		for _, c := range opened {
			c.Close()
		}
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	opened = append(opened, inR, inW)
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	opened = append(opened, outR, outW)
	logs, err := newLogRelays(spec.Stdout, spec.Stderr)
	if err != nil {
		return fail(err)
	}
	opened = append(opened, logs)
	files := []*os.File{inR, logs.writer(0, spec.Stdout), logs.writer(1, spec.Stderr), outW}
	if spec.Sidecar != "" {
		sc, err := dialSidecar(spec.Sidecar)
		if err != nil {
			return fail(err)
		}
		defer sc.Close()
		files = append(files, sc)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	opened = append(opened, statusR)
	env := withStatusFD(spec.Env, len(files))
	files = append(files, statusW)
	child, err := r.Start(ProcSpec{
		Argv:        spec.Argv,
		Env:         env,
		Files:       files,
		Credential:  spec.Credential,
		AmbientCaps: spec.AmbientCaps,
	})
	// The child holds its own copies; ours would keep fd 3 open forever
	// and hide the launcher's death from the reader.
	inR.Close()
	outW.Close()
	statusW.Close()
	if err != nil {
		return fail(err) // closing the ends closed above again is harmless
	}
	e := &Executor{child: child, stdin: inW, out: outR, logs: logs, lines: make(chan lineResult), quit: make(chan struct{}), statusDone: make(chan struct{})}
	go e.readLines()
	go readStatus(statusR, spec.OnStatus, e.statusDone)

	if !spec.WaitForAck {
		select {
		case <-child.Done():
			e.Stop(grace)
			return nil, errExited
		case <-time.After(noAckWait):
			return e, nil
		}
	}
	line, err := e.readLine()
	if err != nil {
		e.Stop(grace)
		return nil, errors.New(msgExitedAtInit)
	}
	ok, report := parseAck(line)
	if !ok {
		e.Stop(grace)
		return nil, errors.New(msgBadAck)
	}
	if report != nil && spec.OnStatus != nil {
		spec.OnStatus(StatusMessage{Rewind: report, fromAck: true})
	}
	e.logs.Sync() // what the action printed at import belongs to /init
	return e, nil
}

// readLines is the only reader of fd 3. bufio.Reader.ReadBytes has no line
// limit, unlike bufio.Scanner, because results can be many megabytes.
func (e *Executor) readLines() {
	defer close(e.lines)
	br := bufio.NewReaderSize(e.out, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			// A partial line without "\n" is not a complete message.
			select {
			case e.lines <- lineResult{err: err}:
			case <-e.quit:
			}
			return
		}
		select {
		case e.lines <- lineResult{line: line}:
		case <-e.quit:
			return
		}
	}
}

// readLine waits for the next fd-3 line, or for the launcher's exit.
func (e *Executor) readLine() ([]byte, error) {
	var res lineResult
	var ok bool
	select {
	case res, ok = <-e.lines:
	case <-e.child.Done():
		// The launcher may have written its line just before exiting.
		select {
		case res, ok = <-e.lines:
		case <-time.After(lineGrace):
			ok = false
		}
	}
	if !ok || res.err != nil {
		e.broken = true
		return nil, errExited
	}
	return res.line, nil
}

// Interact sends one request line and returns the launcher's reply line
// (with its "\n"), or errExited if the launcher died meanwhile.
func (e *Executor) Interact(line []byte) ([]byte, error) {
	if e.Dead() {
		return nil, errExited
	}
	msg := make([]byte, 0, len(line)+1)
	msg = append(append(msg, line...), '\n')
	// os.File.Write loops until everything is written; EPIPE means the
	// launcher is gone (Go ignores SIGPIPE for fds other than 1 and 2).
	if _, err := e.stdin.Write(msg); err != nil {
		e.broken = true
		return nil, errExited
	}
	return e.readLine()
}

// Dead reports whether the launcher has exited or stopped talking.
func (e *Executor) Dead() bool { return e.broken || e.child.Exited() }

// Reap waits up to grace for a launcher that stopped talking to exit on its
// own (so its exit code is its own, not our SIGTERM), then stops it, and
// returns the exit code.
func (e *Executor) Reap(grace time.Duration) int {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-e.child.Done():
	case <-t.C:
	}
	e.Stop(grace)
	return e.child.ExitCode()
}

// Stop terminates the launcher's process group (SIGTERM, then SIGKILL after
// grace) and releases the pipes. Safe to call more than once.
func (e *Executor) Stop(grace time.Duration) {
	e.stopOnce.Do(func() {
		close(e.quit)
		e.child.Stop(grace)
		e.stdin.Close()
		e.out.Close()
		e.logs.Close() // after the launcher's last words
	})
}

// WaitStatusDrained waits up to d for the status pipe to reach EOF, so a
// reason the launcher wrote just before it exited has been handed on.
func (e *Executor) WaitStatusDrained(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.statusDone:
	case <-t.C:
	}
}

// SyncLogs returns once everything the launcher printed so far is out, and
// which of stdout and stderr end in the middle of a line.
func (e *Executor) SyncLogs() [2]bool { return e.logs.Sync() }

// Pid is the launcher's pid (and process group id).
func (e *Executor) Pid() int { return e.child.Pid }
