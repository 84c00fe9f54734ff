// reaper_test.go: exit statuses reach their Child; orphans are reaped.

package actionloop

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReaperDeliversExitStatus(t *testing.T) {
	r := SharedReaper()
	for _, c := range []struct {
		script string
		code   int
	}{{"exit 0", 0}, {"exit 5", 5}, {"kill -KILL $$", 128 + 9}} {
		child, err := r.Start(ProcSpec{Argv: []string{"/bin/sh", "-c", c.script}})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: never reaped", c.script)
		}
		if child.ExitCode() != c.code {
			t.Errorf("%s: exit code %d, want %d", c.script, child.ExitCode(), c.code)
		}
	}
	if _, err := r.Start(ProcSpec{Argv: []string{"/no/such/binary"}}); err == nil {
		t.Fatal("started a missing binary")
	}
}

func TestOrphansAreReaped(t *testing.T) {
	// As a subreaper the test process stands in for PID 1.
	if err := BecomeSubreaper(); err != nil {
		t.Skip("cannot become a subreaper:", err)
	}
	r := SharedReaper()
	before := r.Orphans()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// The shell forks a sleeper and exits at once: the sleeper is orphaned,
	// re-parented to us, and must not stay a zombie when it exits.
	child, err := r.Start(ProcSpec{Argv: []string{"/bin/sh", "-c", "sleep 0.3 & echo $!"}, Files: []*os.File{nil, pw, nil}})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	orphan, _ := strconv.Atoi(strings.TrimSpace(line))
	<-child.Done()
	if !gone(orphan, 5*time.Second) {
		stat, _ := os.ReadFile("/proc/" + line[:len(line)-1] + "/stat")
		t.Fatalf("orphan %d not reaped: %s", orphan, stat)
	}
	deadline := time.Now().Add(time.Second)
	for r.Orphans() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Orphans() == before {
		t.Fatal("the orphan was reaped by someone else")
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	child, err := SharedReaper().Start(ProcSpec{Argv: []string{"/bin/sh", "-c", "trap '' TERM; sleep 30 & wait"}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the shell install its trap
	start := time.Now()
	child.Stop(200 * time.Millisecond)
	if child.Status().Signal() != syscall.SIGKILL || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("status %v after %v", child.Status(), time.Since(start))
	}
}

func TestAStoppedChildIsResumed(t *testing.T) {
	// A request that SIGSTOPs the launcher must not hang every later request.
	child, err := SharedReaper().Start(ProcSpec{Argv: []string{"/bin/sh", "-c", "kill -STOP $$; exit 7"}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		child.Stop(0)
		t.Fatal("the stopped child was never resumed")
	}
	if child.ExitCode() != 7 {
		t.Fatalf("exit code %d, want 7", child.ExitCode())
	}
}
