// executor_test.go: starting a launcher (ack or the 5 ms rule) and stopping
// its whole process group.

package actionloop

import (
	"syscall"
	"testing"
	"time"
)

// launchSpec runs the fixture launcher directly.
func launchSpec(ack bool, env ...string) LaunchSpec {
	if ack {
		env = append(env, "__OW_WAIT_FOR_ACK=1")
	}
	return LaunchSpec{Argv: []string{testdata("launcher.py")}, Env: env, Stdout: devNull(), Stderr: devNull(), WaitForAck: ack}
}

func TestExecutorInteracts(t *testing.T) {
	for _, ack := range []bool{true, false} {
		e, err := StartExecutor(SharedReaper(), launchSpec(ack), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		reply, err := e.Interact([]byte(`{"value":{"seq":7}}`))
		if err != nil || string(reply) != `{"seq": 7, "n": 1}`+"\n" {
			t.Fatalf("ack=%v: %q %v", ack, reply, err)
		}
		e.Stop(time.Second)
		if _, err := e.Interact([]byte(`{}`)); err != errExited || !e.Dead() {
			t.Fatalf("stopped executor: %v", err)
		}
	}
}

func TestExecutorStartErrors(t *testing.T) {
	cases := map[string]LaunchSpec{
		msgExitedAtInit: launchSpec(true, "FIXTURE_EXIT_AT_START=3"),
		msgBadAck:       launchSpec(true, `FIXTURE_ACK={"ok": false}`),
	}
	for want, spec := range cases {
		if _, err := StartExecutor(SharedReaper(), spec, time.Second); err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	}
	spec := launchSpec(false)
	spec.Argv = []string{"/bin/false"}
	if _, err := StartExecutor(SharedReaper(), spec, time.Second); err != errExited {
		t.Errorf("no ack, immediate exit: %v", err)
	}
}

func TestExecutorReapKeepsTheLaunchersOwnExitCode(t *testing.T) {
	e, err := StartExecutor(SharedReaper(), launchSpec(true), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Interact([]byte(`{"value":{"crash":5}}`)); err != errExited {
		t.Fatalf("%v", err)
	}
	if code := e.Reap(time.Second); code != ExitRewindFailed {
		t.Fatalf("exit code %d", code)
	}
}

func TestStopKillsTheWholeGroup(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	grandchild := int(h.runJSON(t, map[string]int{"spawn": 60})["spawn"].(float64))
	launcher := h.srv.launcherChild()
	start := time.Now()
	h.srv.Close()
	if !gone(launcher.Pid, 5*time.Second) || !gone(grandchild, 5*time.Second) {
		t.Fatal("launcher group survived Close")
	}
	if launcher.Status().Signal() != syscall.SIGTERM {
		t.Fatalf("launcher ended by %v, want SIGTERM", launcher.Status())
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("SIGTERM did not stop the launcher before the grace period")
	}
}
