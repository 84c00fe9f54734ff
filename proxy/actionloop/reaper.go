// reaper.go: the only code in the proxy that waits for child processes.
//
// The proxy runs as PID 1 in the image, so every orphan of the launcher's
// process tree is re-parented to it and must be reaped, or zombies pile up.
// A reaper that calls wait4(-1) would steal statuses from exec.Cmd.Wait, so
// the proxy never uses Cmd.Wait: it starts children here and learns about
// their exit through channels.

package actionloop

import (
	"errors"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Child is a process started through the Reaper.
type Child struct {
	// Pid is the process id; children are started with Setpgid, so it is
	// also the process group id.
	Pid int
	// done is closed by the reaper once status is set.
	done   chan struct{}
	status syscall.WaitStatus
}

// Done is closed when the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Status is the child's wait status; valid only after Done is closed.
func (c *Child) Status() syscall.WaitStatus { return c.status }

// Exited reports whether the child has been reaped, without blocking.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ExitCode is the child's exit code, or 128+signal if a signal killed it.
// Valid only after Done is closed.
func (c *Child) ExitCode() int {
	if c.status.Signaled() {
		return 128 + int(c.status.Signal())
	}
	return c.status.ExitStatus()
}

// Signal sends sig to the child's whole process group, so that processes
// the launcher forked (grandchildren of the proxy) get it too.
func (c *Child) Signal(sig syscall.Signal) {
	// ESRCH only means the group is already gone.
	_ = syscall.Kill(-c.Pid, sig)
}

// Stop sends SIGTERM to the group, waits up to grace for the leader to exit,
// then sends SIGKILL to whatever is left of the group and waits for the
// leader to be reaped.
func (c *Child) Stop(grace time.Duration) {
	c.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
	c.Signal(syscall.SIGKILL)
	<-c.done
}

// Reaper reaps every child of the process on SIGCHLD and hands each exit
// status to the Child that was registered for it. Statuses of unknown pids
// (orphans re-parented to us) are discarded: reaping them is the point.
type Reaper struct {
	// mu guards children and is held across fork+register, so the reap
	// loop can never look up a pid before it is registered.
	mu       sync.Mutex
	children map[int]*Child
	// orphans counts reaped processes nobody registered (for diagnostics).
	orphans int
}

var (
	reaperOnce sync.Once
	theReaper  *Reaper
)

// SharedReaper returns the process-wide reaper, starting it on first use.
// There can be only one: wait4(-1) reaps every child of the process.
func SharedReaper() *Reaper {
	reaperOnce.Do(func() {
		theReaper = &Reaper{children: map[int]*Child{}}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGCHLD)
		go theReaper.loop(sigs)
	})
	return theReaper
}

// loop reaps on every SIGCHLD. Signals coalesce, so each wake-up reaps until
// wait4 reports nothing more; the ticker is a safety net against a SIGCHLD
// delivered before signal.Notify took effect.
func (r *Reaper) loop(sigs <-chan os.Signal) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.reapAll()
		select {
		case <-sigs:
		case <-tick.C:
		}
	}
}

// reapAll collects every exited child without blocking.
func (r *Reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|syscall.WUNTRACED, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited yet
		}
		if ws.Stopped() {
			r.resumeStopped(pid)
			continue
		}
		if ws.Continued() {
			continue
		}
		r.mu.Lock()
		c, ok := r.children[pid]
		if ok {
			delete(r.children, pid)
		} else {
			r.orphans++
		}
		r.mu.Unlock()
		if ok {
			c.status = ws
			close(c.done)
		}
	}
}

// resumeStopped sends SIGCONT to a child we started that something stopped:
// a request that SIGSTOPs the launcher (the snapshot process) must cost at most
// its own request, not hang every later one until the invoker gives up.
func (r *Reaper) resumeStopped(pid int) {
	r.mu.Lock()
	_, ours := r.children[pid]
	r.mu.Unlock()
	if ours {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

// Orphans is the number of reaped processes that were not started through
// the reaper.
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

// ProcSpec describes a child to start.
type ProcSpec struct {
	// Argv is the command; Argv[0] is the path that is executed.
	Argv []string
	// Env is the complete environment (nothing is inherited).
	Env []string
	// Dir is the working directory; empty means the proxy's.
	Dir string
	// Files become the child's fds 0, 1, 2, 3...; nil entries are /dev/null.
	Files []*os.File
	// Credential, if set, is the user the child runs as.
	Credential *syscall.Credential
	// AmbientCaps are capabilities the child keeps across its exec.
	AmbientCaps []uintptr
}

// Start forks and execs spec in a new process group and registers it.
func (r *Reaper) Start(spec ProcSpec) (*Child, error) {
	fds := make([]uintptr, len(spec.Files))
	var devnull *os.File
	for i, f := range spec.Files {
		if f == nil {
			if devnull == nil {
				var err error
				if devnull, err = os.Open(os.DevNull); err != nil {
					return nil, err
				}
				defer devnull.Close()
			}
			f = devnull
		}
		fds[i] = f.Fd()
	}
	attr := &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: fds,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: spec.Credential, AmbientCaps: spec.AmbientCaps},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(spec.Argv[0], spec.Argv, attr)
	runtime.KeepAlive(spec.Files)
	if err != nil {
		return nil, &os.PathError{Op: "start", Path: spec.Argv[0], Err: err}
	}
	c := &Child{Pid: pid, done: make(chan struct{})}
	r.children[pid] = c
	return c, nil
}

// waitOnce waits for one specific child. It exists only for the short-lived
// __rewind_launch role, a separate process in which no Reaper runs.
func waitOnce(pid int) (syscall.WaitStatus, error) {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return ws, err
	}
}

// BecomeSubreaper makes orphaned descendants re-parent to this process even
// when it is not PID 1 (e.g. under tini or in tests), so the reaper sees them.
func BecomeSubreaper() error {
	const prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER, <linux/prctl.h>
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
