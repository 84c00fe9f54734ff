// helpers_test.go: TestMain and the helpers shared by the tests and examples.

package actionloop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the kernel-helper roles: the launch
// role re-executes /proc/self/exe, which during tests is this binary.
func TestMain(m *testing.M) {
	if code, handled := DispatchRole(os.Args); handled {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testdata returns the absolute path of a fixture.
func testdata(name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return p
}

// fixture reads a fixture's bytes.
func fixture(name string) []byte {
	b, err := os.ReadFile(testdata(name))
	if err != nil {
		panic(err)
	}
	return b
}

// baseEnv is the proxy environment of most tests: the fixture compiler,
// acks, and no kernel helper (its tests set REWIND_MEMORY themselves).
func baseEnv(root string) []string {
	return []string{
		"OW_COMPILER=" + testdata("compile.sh"),
		"OW_WAIT_FOR_ACK=1",
		"REWIND_ACTION_ROOT=" + root,
		"REWIND_MEMORY=none",
		"REWIND_STOP_GRACE=500ms",
		"PATH=" + os.Getenv("PATH"),
	}
}

// mustLoad loads a config or panics (for examples, which have no *testing.T).
func mustLoad(env []string) Config {
	cfg, err := Load(env)
	if err != nil {
		panic(err)
	}
	return cfg
}

// harness is a proxy behind an httptest server, with its log streams.
type harness struct {
	url    string
	root   string
	srv    *Server
	http   *httptest.Server
	stdout *os.File
	stderr *os.File
}

// newHarness starts a proxy configured by baseEnv plus extra. stdout/stderr
// nil means temporary files the test can read with logs().
func newHarness(stdout, stderr *os.File, extra ...string) *harness {
	root, err := os.MkdirTemp("", "proxytest")
	if err != nil {
		panic(err)
	}
	h := &harness{root: root}
	if stdout == nil {
		stdout = tempFile(root, "stdout")
	}
	if stderr == nil {
		stderr = tempFile(root, "stderr")
	}
	h.stdout, h.stderr = stdout, stderr
	cfg := mustLoad(append(baseEnv(filepath.Join(root, "action")), extra...))
	h.srv = NewServer(cfg, stdout, stderr)
	h.http = httptest.NewServer(h.srv)
	h.url = h.http.URL
	return h
}

// tempFile creates a log file in dir.
func tempFile(dir, name string) *os.File {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		panic(err)
	}
	return f
}

// close stops everything and removes the temporary directory.
func (h *harness) close() {
	h.http.Close()
	h.srv.Close()
	os.RemoveAll(h.root)
}

// logs returns what was written to the temporary stdout and stderr files.
func (h *harness) logs() (string, string) {
	out, _ := os.ReadFile(filepath.Join(h.root, "stdout"))
	errs, _ := os.ReadFile(filepath.Join(h.root, "stderr"))
	return string(out), string(errs)
}

// post sends body and returns the status and the body.
func (h *harness) post(path string, body []byte) (int, string) {
	resp, err := http.Post(h.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	return resp.StatusCode, string(b)
}

// show posts and prints the exchange for an example transcript.
func (h *harness) show(path, body string) {
	code, reply := h.post(path, []byte(body))
	fmt.Printf("%s -> %d %s", path, code, reply)
	if !strings.HasSuffix(reply, "\n") {
		fmt.Println()
	}
}

// initBody builds an /init body for code with the given main and env.
func initBody(code []byte, binary bool, main string, env map[string]interface{}) []byte {
	value := map[string]interface{}{"main": main, "code": string(code), "binary": binary}
	if env != nil {
		value["env"] = env
	}
	b, err := json.Marshal(map[string]interface{}{"value": value})
	if err != nil {
		panic(err)
	}
	return b
}

// runBody builds a /run body with the given value.
func runBody(value interface{}) []byte {
	b, err := json.Marshal(map[string]interface{}{"value": value})
	if err != nil {
		panic(err)
	}
	return b
}

// mustInit initialises h with source text (compiled by compile.sh).
func (h *harness) mustInit(t *testing.T, env map[string]interface{}) {
	t.Helper()
	code, reply := h.post("/init", initBody([]byte("source"), false, "", env))
	if code != 200 {
		t.Fatalf("init: %d %s", code, reply)
	}
}

// runJSON posts a /run with value and decodes a 200 reply.
func (h *harness) runJSON(t *testing.T, value interface{}) map[string]interface{} {
	t.Helper()
	code, reply := h.post("/run", runBody(value))
	if code != 200 {
		t.Fatalf("run %v: %d %s", value, code, reply)
	}
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(reply), &m); err != nil {
		t.Fatalf("run %v: %v in %q", value, err, reply)
	}
	return m
}

// gone waits until pid no longer exists (reaped, not a zombie).
func gone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// devNull is a sink for streams an example does not show.
func devNull() *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	return f
}

// launcherChild returns the running launcher, or nil; it takes procMu so
// the race detector sees the handler's write happen before this read.
func (s *Server) launcherChild() *Child {
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if s.exec == nil {
		return nil
	}
	return s.exec.child
}
