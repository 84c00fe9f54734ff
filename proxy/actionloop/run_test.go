// run_test.go: the /run rows of the contract and our additions (queueing,
// restart after a crash, fail-closed on exit code 5, the status line).

package actionloop

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A run: the action's log line, then the sentinel, then the reply. Pretty
// printed bodies are accepted; arrays pass through.
func ExampleServer_run() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/run", `{"value":{}}`)
	h.show("/init", `{"value":{"code":"src"}}`)
	h.show("/run", "{\n  \"value\": {\"print\": \"héllo\", \"name\": \"Jane\"}\n}")
	h.show("/run", `{"value":[1,2,3]}`)
	// Output:
	// /run -> 500 {"error":"no action defined yet"}
	// launcher started
	// /init -> 200 {"ok":true}
	// héllo
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 200 {"print": "h\u00e9llo", "name": "Jane"}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 200 [1, 2, 3]
}

// Invalid JSON never reaches the launcher (no sentinel); a reply that is not
// an object or array is a 502; the status line is a 400 that keeps the
// launcher.
func ExampleServer_run_errors() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":{"code":"src"}}`)
	h.show("/run", `{"value": nope}`)
	h.show("/run", `{"value":{"raw":"null"}}`)
	h.show("/run", `{"value":{"raw":"NaN"}}`)
	h.show("/run", `{"value":{"exited":true}}`)
	h.show("/run", `{"value":{"seq":1}}`)
	// Output:
	// launcher started
	// /init -> 200 {"ok":true}
	// /run -> 400 {"error":"Invalid JSON in the request body: invalid character 'o' in literal null (expecting 'u')"}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 502 {"error":"The action did not return a dictionary or array."}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 502 {"error":"The action did not return a dictionary or array."}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 400 {"error":"command exited"}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 200 {"seq": 1, "n": 4}
}

// A launcher that dies costs one request; the next /run starts a new one.
// Exit code 5 (a failed rewind) is different: the proxy fails closed.
func ExampleServer_run_launcherDeath() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":{"code":"src"}}`)
	h.show("/run", `{"value":{"crash":1}}`)
	h.show("/run", `{"value":{"seq":1}}`)
	h.show("/run", `{"value":{"exit_after":5}}`)
	<-h.srv.launcherChild().Done() // the rewind fails after the reply
	h.show("/run", `{"value":{"seq":2}}`)
	h.show("/run", `{"value":{"seq":3}}`)
	// Output:
	// launcher started
	// /init -> 200 {"ok":true}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 400 {"error":"command exited"}
	// launcher started
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 200 {"seq": 1, "n": 1}
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /run -> 200 {"exit_after": 5}
	// /run -> 503 {"error":"The runtime refused the request: a rewind could not be completed, so a clean state cannot be guaranteed. The reason is at GET /rewind/status of the container."}
	// /run -> 503 {"error":"The runtime refused the request: a rewind could not be completed, so a clean state cannot be guaranteed. The reason is at GET /rewind/status of the container."}
}

func TestReplyIsVerbatimJSONWithSentinelsOnBothStreams(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	resp, err := http.Post(h.url+"/run", "application/json", strings.NewReader(`{"value":{"print":"log line","k":"v"}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"print": "log line", "k": "v"}`+"\n" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
	stdout, stderr := h.logs()
	if stdout != "launcher started\nlog line\n"+Sentinel+"\n" || stderr != "err: log line\n"+Sentinel+"\n" {
		t.Fatalf("stdout %q stderr %q", stdout, stderr)
	}
}

func TestNonObjectRepliesAre502(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	for _, raw := range []string{"null", "42", `"text"`, "NaN", "{broken", "", "true"} {
		code, reply := h.post("/run", runBody(map[string]string{"raw": raw}))
		if code != 502 || reply != `{"error":"`+msgNotArray+`"}`+"\n" {
			t.Errorf("reply %q: %d %s", raw, code, reply)
		}
	}
	// A user result that merely mentions the key is not a status line, nor
	// is one that says "exited" without the leading space.
	got := h.runJSON(t, map[string]interface{}{"rewind_status": "fine"})
	if got["rewind_status"] != "fine" {
		t.Fatalf("%v", got)
	}
	got = h.runJSON(t, map[string]interface{}{"rewind_status": "exited"})
	if got["rewind_status"] != "exited" {
		t.Fatalf("%v", got)
	}
}

func TestStatusLineKeepsTheLauncher(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	pid := h.srv.launcherChild().Pid
	if code, reply := h.post("/run", runBody(map[string]bool{"exited": true})); code != 400 || reply != `{"error":"command exited"}`+"\n" {
		t.Fatalf("%d %s", code, reply)
	}
	if got := h.runJSON(t, map[string]int{"pid": 1}); got["pid"] != float64(pid) {
		t.Fatalf("launcher replaced: %v, was %d", got["pid"], pid)
	}
}

func TestOverlappingRunsAreQueuedInOrder(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	const n = 10
	var wg sync.WaitGroup
	replies := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			code, reply := h.post("/run", runBody(map[string]interface{}{"seq": i, "sleep": 0.03}))
			replies[i] = fmt.Sprintf("%d %s", code, strings.TrimSpace(reply))
		}(i)
		// Stagger the arrivals so their order is known.
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	for i, r := range replies {
		if want := fmt.Sprintf(`200 {"seq": %d, "n": %d}`, i, i+1); r != want {
			t.Errorf("reply %d = %s, want %s", i, r, want)
		}
	}
	stdout, _ := h.logs()
	if c := strings.Count(stdout, Sentinel); c != n {
		t.Errorf("%d sentinels on stdout, want %d", c, n)
	}
}

func TestLargeBodiesAndReplies(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	big := strings.Repeat("é", 3<<20) // 6 MiB of UTF-8 in one line
	code, reply := h.post("/run", runBody(map[string]string{"payload": big}))
	if code != 200 || !strings.Contains(reply, strings.Repeat(`\u00e9`, 100)) || len(reply) < 18<<20 {
		t.Fatalf("echo of a big body: %d, %d bytes", code, len(reply))
	}
	got := h.runJSON(t, map[string]int{"big": 20 << 20})
	if len(got["big"].(string)) != 20<<20 {
		t.Fatal("big reply truncated")
	}
}

func TestLauncherClosingFd3IsCommandExited(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	pid := h.srv.launcherChild().Pid
	if code, reply := h.post("/run", runBody(map[string]bool{"close_fd3": true})); code != 400 || !strings.Contains(reply, "command exited") {
		t.Fatalf("%d %s", code, reply)
	}
	if !gone(pid, 3*time.Second) {
		t.Fatal("a launcher that closed fd 3 was not stopped")
	}
	h.runJSON(t, map[string]int{"seq": 1})
}

func TestCrashWithExitCode5DuringRunFailsClosed(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	if code, reply := h.post("/run", runBody(map[string]int{"crash": ExitRewindFailed})); code != 503 || !strings.Contains(reply, msgFailClosed) {
		t.Fatalf("in-flight exit code 5: %d %s", code, reply)
	}
	for i := 0; i < 3; i++ {
		if code, reply := h.post("/run", runBody(map[string]int{"seq": i})); code != 503 || !strings.Contains(reply, msgFailClosed) {
			t.Fatalf("after exit code 5: %d %s", code, reply)
		}
	}
	if h.srv.launcherChild() != nil {
		t.Fatal("launcher restarted after a failed rewind")
	}
	if stdout, _ := h.logs(); strings.Count(stdout, "launcher started") != 1 {
		t.Fatalf("launcher restarted: %q", stdout)
	}
}

func TestRestartFailureIs502(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	if code, _ := h.post("/run", runBody(map[string]int{"crash": 1})); code != 400 {
		t.Fatal("crash not reported")
	}
	exe := filepath.Join(h.root, "action", "1", "bin", "exec")
	if err := os.Rename(exe, exe+".gone"); err != nil {
		t.Fatal(err)
	}
	code, reply := h.post("/run", runBody(map[string]int{"seq": 1}))
	if code != 502 || !strings.HasPrefix(reply, `{"error":"cannot start action: `) {
		t.Fatalf("%d %s", code, reply)
	}
	if err := os.Rename(exe+".gone", exe); err != nil {
		t.Fatal(err)
	}
	h.runJSON(t, map[string]int{"seq": 1})
}

func TestRunEnvironmentOfARestartedLauncherIsUnchanged(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, map[string]interface{}{"SOME_VAR": "xyz"})
	before := h.runJSON(t, map[string][]string{"env": {"SOME_VAR", "REWIND_ACTION_DIR"}})
	h.post("/run", runBody(map[string]int{"crash": 9}))
	after := h.runJSON(t, map[string][]string{"env": {"SOME_VAR", "REWIND_ACTION_DIR"}})
	a, _ := json.Marshal(before)
	b, _ := json.Marshal(after)
	if string(a) != string(b) {
		t.Fatalf("env changed across restart: %s vs %s", a, b)
	}
}
