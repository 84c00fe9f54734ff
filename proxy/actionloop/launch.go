// launch.go: the kernel helper, two roles of the proxy binary itself.
//
// The REWIND kernel's syscall 550 marks the PARENT of its caller as
// rewindable, so it cannot be made by the launcher about itself nor by the
// proxy about the launcher. Instead the proxy starts itself as
// "__rewind_launch <bin/exec>" (already in the launcher's process group and
// under its credentials); that process forks "__rewind_mark_parent", which
// makes the call and reports the errno as its exit code, and then the launch
// process execs bin/exec — so the marked process becomes the launcher.

package actionloop

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Role names, dispatched from argv[1] before flag parsing.
const (
	// LaunchRole: argv = [proxy, LaunchRole, bin/exec, args...].
	LaunchRole = "__rewind_launch"
	// MarkParentRole: argv = [proxy, MarkParentRole].
	MarkParentRole = "__rewind_mark_parent"
)

// sysRewindable is the REWIND kernel's "rewindable" system call.
const sysRewindable = 550

// Values of REWIND_KERNEL as set by the launch role for the launcher.
const (
	KernelAvailable = "available"
	KernelAbsent    = "absent"
	kernelErrPrefix = "error:"
)

// selfExe re-executes the running proxy binary.
const selfExe = "/proc/self/exe"

// markParentRewindable asks the REWIND kernel to make the caller's parent
// rewindable; ENOSYS means a stock kernel.
func markParentRewindable() syscall.Errno {
	_, _, errno := syscall.RawSyscall(sysRewindable, 0, 0, 0)
	return errno
}

// DispatchRole runs a helper role if args (os.Args) names one. It returns
// handled=false for a normal proxy start. The launch role does not return on
// success (it execs the launcher).
func DispatchRole(args []string) (code int, handled bool) {
	if len(args) < 2 {
		return 0, false
	}
	switch args[1] {
	case MarkParentRole:
		return int(markParentRewindable()), true
	case LaunchRole:
		return runLaunchRole(args[2:]), true
	}
	return 0, false
}

// runLaunchRole marks this process rewindable through a helper child and
// execs argv with REWIND_KERNEL describing the outcome. It returns only if
// the exec failed.
func runLaunchRole(argv []string) int {
	if len(argv) == 0 {
		os.Stderr.WriteString("rewind launch: missing launcher path\n")
		return 2
	}
	env := withKernelStatus(os.Environ(), probeKernel())
	err := syscall.Exec(argv[0], argv, env)
	os.Stderr.WriteString("rewind launch: cannot exec " + argv[0] + ": " + err.Error() + "\n")
	return 127
}

// probeKernel runs the mark-parent helper and turns its exit code into a
// REWIND_KERNEL value.
func probeKernel() string {
	pid, err := syscall.ForkExec(selfExe, []string{selfExe, MarkParentRole}, &syscall.ProcAttr{
		Env:   []string{},
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		return kernelStatus(errnoOf(err))
	}
	ws, err := waitOnce(pid)
	if err != nil {
		return kernelStatus(errnoOf(err))
	}
	if ws.Signaled() {
		return kernelErrPrefix + "signal-" + strconv.Itoa(int(ws.Signal()))
	}
	return kernelStatus(syscall.Errno(ws.ExitStatus()))
}

// kernelStatus maps the helper's errno to a REWIND_KERNEL value.
func kernelStatus(errno syscall.Errno) string {
	switch errno {
	case 0:
		return KernelAvailable
	case syscall.ENOSYS:
		return KernelAbsent
	}
	return kernelErrPrefix + strconv.Itoa(int(errno))
}

// errnoOf extracts an errno from a failed system call, or EIO if there is
// none, so the launcher always sees a numeric error.
func errnoOf(err error) syscall.Errno {
	if errno, ok := err.(syscall.Errno); ok {
		return errno
	}
	return syscall.EIO
}

// withKernelStatus replaces any REWIND_KERNEL in env: only the probe may
// claim the kernel is available.
func withKernelStatus(env []string, status string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "REWIND_KERNEL=") {
			out = append(out, kv)
		}
	}
	return append(out, "REWIND_KERNEL="+status)
}
