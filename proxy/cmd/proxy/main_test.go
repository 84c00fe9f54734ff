// main_test.go: the command's start-up and shutdown, run as a real process
// (this test binary re-executed with PROXY_TEST_MAIN=1 becomes the proxy).

package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("PROXY_TEST_MAIN") == "1" {
		os.Args = append([]string{os.Args[0]}, flagArgs()...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// flagArgs passes the proxy flags through PROXY_TEST_ARGS (space-separated).
func flagArgs() []string {
	var out []string
	for _, f := range bytes.Fields([]byte(os.Getenv("PROXY_TEST_ARGS"))) {
		out = append(out, string(f))
	}
	return out
}

// proxyCmd re-executes the test binary as the proxy.
func proxyCmd(args string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append([]string{"PROXY_TEST_MAIN=1", "PROXY_TEST_ARGS=" + args, "PATH=" + os.Getenv("PATH")}, env...)
	return cmd
}

func TestInvalidConfigExitsWithCode2(t *testing.T) {
	var stderr, stdout bytes.Buffer
	cmd := proxyCmd("", "REWIND_MEMORY=bogus")
	cmd.Stderr, cmd.Stdout = &stderr, &stdout
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("err %v", err)
	}
	want := "proxy: invalid REWIND_MEMORY \"bogus\": want one of auto, kernel, fork, fresh, inplace, none\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("stderr %q stdout %q", stderr.String(), stdout.String())
	}
}

func TestVersionFlag(t *testing.T) {
	out, err := proxyCmd("-version").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("%q %v", out, err)
	}
}

func TestSIGTERMShutsDownQuietly(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var out bytes.Buffer
	cmd := proxyCmd("-port "+strconv.Itoa(port), "REWIND_ACTION_ROOT="+t.TempDir())
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("proxy never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("proxy printed %q in normal operation", out.String())
	}
}
