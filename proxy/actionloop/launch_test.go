// launch_test.go: the kernel helper on a stock kernel (no syscall 550).

package actionloop

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestMarkParentHelperReportsENOSYS(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child, err := SharedReaper().Start(ProcSpec{Argv: []string{self, MarkParentRole}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("helper hung")
	}
	if child.ExitCode() != int(syscall.ENOSYS) {
		t.Fatalf("exit code %d, want ENOSYS (38) on a stock kernel", child.ExitCode())
	}
}

func TestKernelStatusValues(t *testing.T) {
	for errno, want := range map[syscall.Errno]string{0: "available", syscall.ENOSYS: "absent", syscall.EPERM: "error:1"} {
		if got := kernelStatus(errno); got != want {
			t.Errorf("%d: %s, want %s", errno, got, want)
		}
	}
	env := withKernelStatus([]string{"A=1", "REWIND_KERNEL=forged"}, "absent")
	if len(env) != 2 || env[1] != "REWIND_KERNEL=absent" {
		t.Fatalf("%v", env)
	}
}

func TestLauncherStartsThroughTheKernelHelper(t *testing.T) {
	for _, mode := range []string{MemoryAuto, MemoryKernel} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(nil, nil, "REWIND_MEMORY="+mode)
			defer h.close()
			h.mustInit(t, nil)
			got := h.runJSON(t, map[string][]string{"env": {"REWIND_KERNEL", "REWIND_MEMORY"}})
			if got["REWIND_KERNEL"] != KernelAbsent || got["REWIND_MEMORY"] != mode {
				t.Fatalf("%v", got)
			}
			// The launch role execs bin/exec: the marked process (the
			// child the proxy started) is the launcher itself.
			if pid := h.runJSON(t, map[string]int{"pid": 1})["pid"]; pid != float64(h.srv.launcherChild().Pid) {
				t.Fatalf("launcher pid %v, proxy child %d", pid, h.srv.launcherChild().Pid)
			}
		})
	}
	for _, mode := range []string{MemoryFork, MemoryFresh, MemoryInplace, MemoryNone} {
		h := newHarness(nil, nil, "REWIND_MEMORY="+mode)
		h.mustInit(t, nil)
		got := h.runJSON(t, map[string][]string{"env": {"REWIND_KERNEL"}})
		h.close()
		if got["REWIND_KERNEL"] != nil {
			t.Fatalf("%s: REWIND_KERNEL=%v", mode, got["REWIND_KERNEL"])
		}
	}
}

func TestDispatchRoleIgnoresNormalStarts(t *testing.T) {
	for _, args := range [][]string{{"proxy"}, {"proxy", "-port", "1"}} {
		if _, handled := DispatchRole(args); handled {
			t.Fatalf("%v dispatched", args)
		}
	}
	if code, handled := DispatchRole([]string{"proxy", LaunchRole}); !handled || code != 2 {
		t.Fatalf("launch role without a path: %d %v", code, handled)
	}
}
