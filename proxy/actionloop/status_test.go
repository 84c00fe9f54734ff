// status_test.go: GET /rewind/status, the ack's report and the status pipe.

package actionloop

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// reportAck is an ack carrying the launcher's report, as rewind's launcher sends it.
var reportAck = fixtureAck(`{"ok": true, "rewind": {"memory": "fork", "reason": "REWIND_MEMORY=auto: using fork: inplace needs userfaultfd", "checkpoint": "init", "files": "off"}}`)

// fixtureAck makes the fixture launcher ack with line, through the default
// /init env (the launcher inherits only __OW_* and REWIND_* of the proxy).
func fixtureAck(line string) string {
	b, err := json.Marshal(map[string]string{"FIXTURE_ACK": line})
	if err != nil {
		panic(err)
	}
	return "REWIND_INIT_ENV=" + string(b)
}

// getStatus fetches the status endpoint: status code and raw body.
func (h *harness) getStatus(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(h.url + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	return resp.StatusCode, string(b)
}

// status decodes a 200 status body.
func (h *harness) status(t *testing.T) Status {
	t.Helper()
	code, body := h.getStatus(t)
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("status: %d %s", code, body)
	}
	return st
}

func TestParseAck(t *testing.T) {
	rep := &LauncherReport{Memory: "inplace", Reason: "r", Checkpoint: "init", Files: "local"}
	cases := []struct {
		line   string
		ok     bool
		report *LauncherReport
	}{
		{`{"ok": true}`, true, nil},
		{`{"ok":true,"rewind":{"memory":"inplace","reason":"r","checkpoint":"init","files":"local"}}`, true, rep},
		{`{"ok": true, "rewind": "something else"}`, true, nil}, // another runtime's field: ignored
		{`{"ok": true, "rewind": null}`, true, nil},
		{`{"ok": false, "rewind": {"memory": "fork"}}`, false, nil},
		{`{}`, false, nil},
		{`ok`, false, nil},
	}
	for _, c := range cases {
		ok, report := parseAck([]byte(c.line))
		if ok != c.ok || (report == nil) != (c.report == nil) || (report != nil && *report != *c.report) {
			t.Errorf("%s: got %v %+v", c.line, ok, report)
		}
	}
}

func TestStatusBeforeInitAndMethods(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	code, body := h.getStatus(t)
	want := `{"proxy":"` + Version + `","initialized":false,"reported":false,"memory":"","reason":"","checkpoint":"","files":"","failed_closed":false,"fail_reason":""}` + "\n"
	if code != 200 || body != want {
		t.Fatalf("got %d %s", code, body)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead} {
		req, _ := http.NewRequest(m, h.url+StatusPath, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
			t.Errorf("%s: %d allow %q", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	// Other paths keep their 404, even next to the status path.
	for _, p := range []string{"/rewind", "/rewind/status/x", "/rewind/other"} {
		if code, _ := h.post(p, []byte("{}")); code != 404 {
			t.Errorf("%s: %d", p, code)
		}
	}
	stdout, stderr := h.logs()
	if stdout+stderr != "" {
		t.Fatalf("the proxy wrote %q %q", stdout, stderr)
	}
}

func TestStatusReportsTheAckOfOurLauncher(t *testing.T) {
	h := newHarness(nil, nil, reportAck)
	defer h.close()
	h.mustInit(t, nil)
	st := h.status(t)
	want := Status{Proxy: Version, Initialized: true, Reported: true, LauncherReport: LauncherReport{
		Memory: "fork", Reason: "REWIND_MEMORY=auto: using fork: inplace needs userfaultfd", Checkpoint: "init", Files: "off"}}
	if st != want {
		t.Fatalf("got %+v", st)
	}
}

// An upstream launcher acks with {"ok": true} only: it runs, and the status
// says nothing was reported.
func TestStatusWithAnUpstreamLauncher(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	if got := h.runJSON(t, map[string]int{"seq": 1}); got["seq"] != 1.0 {
		t.Fatal(got)
	}
	if st := h.status(t); !st.Initialized || st.Reported || st.Memory != "" || st.FailedClosed {
		t.Fatalf("got %+v", st)
	}
}

// A function may fetch the status too: requests that do different things
// (print, fail, crash the launcher so it restarts, send invalid JSON) leave
// the body byte-identical.
func TestStatusBodyIsByteIdenticalAcrossDifferentRequests(t *testing.T) {
	h := newHarness(nil, nil, reportAck)
	defer h.close()
	h.mustInit(t, nil)
	_, before := h.getStatus(t)
	bodies := []string{
		`{"value":{"seq":1}}`,
		`{"value":{"print":"secret-of-request-2"}}`,
		`{"value":{"exited":true}}`,
		`{"value":{"raw":"null"}}`,
		`{"value": nope}`,
		`{"value":{"crash":1}}`,
		`{"value":{"seq":2}}`,
		`{"value":{"big":100000}}`,
	}
	for _, b := range bodies {
		h.post("/run", []byte(b))
		if _, after := h.getStatus(t); after != before {
			t.Fatalf("after %s:\n%s\nwas\n%s", b, after, before)
		}
	}
}

// The status endpoint does not wait for a /run in progress (which holds the
// server's lock): a function can call it while it runs.
func TestStatusAnswersDuringARun(t *testing.T) {
	h := newHarness(nil, nil, reportAck)
	defer h.close()
	h.mustInit(t, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.post("/run", runBody(map[string]float64{"sleep": 1}))
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if st := h.status(t); st.Memory != "fork" {
		t.Fatalf("got %+v", st)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("status waited %v for the run", d)
	}
	<-done
}

// The launcher's reason for failing closed comes through the status pipe,
// not the log: the streams hold nothing but the sentinels.
func TestFailClosedReasonComesThroughTheStatusPipe(t *testing.T) {
	h := newHarness(nil, nil, reportAck)
	defer h.close()
	h.mustInit(t, nil)
	line := `{"failed_closed": "file rewind through the sidecar failed: gone"}`
	code, reply := h.post("/run", runBody(map[string]interface{}{"status": line, "crash": ExitRewindFailed}))
	if code != 503 || !strings.Contains(reply, msgFailClosed) {
		t.Fatalf("got %d %s", code, reply)
	}
	st := h.status(t)
	if !st.FailedClosed || st.FailReason != "file rewind through the sidecar failed: gone" || st.Memory != "fork" {
		t.Fatalf("got %+v", st)
	}
	_, b1 := h.getStatus(t)
	h.post("/run", runBody(map[string]int{"seq": 1}))
	if _, b2 := h.getStatus(t); b1 != b2 {
		t.Fatalf("changed after a refused run:\n%s\n%s", b2, b1)
	}
	stdout, stderr := h.logs()
	if strings.Contains(stdout+stderr, "gone") {
		t.Fatalf("the reason reached the activation logs: %q %q", stdout, stderr)
	}
}

func TestFailClosedWithoutAReasonSaysSo(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	h.post("/run", runBody(map[string]int{"crash": ExitRewindFailed}))
	if st := h.status(t); !st.FailedClosed || st.FailReason != msgFailUnreported {
		t.Fatalf("got %+v", st)
	}
}

// A fail-closed line counts only once the launcher really exits with code 5.
func TestAFailClosedLineWithoutTheExitChangesNothing(t *testing.T) {
	h := newHarness(nil, nil, reportAck)
	defer h.close()
	h.mustInit(t, nil)
	_, before := h.getStatus(t)
	h.runJSON(t, map[string]interface{}{"status": `{"failed_closed": "forged"}`, "seq": 1})
	h.runJSON(t, map[string]interface{}{"status": `not json`, "seq": 2})
	if _, after := h.getStatus(t); after != before {
		t.Fatalf("got %s", after)
	}
	if got := h.runJSON(t, map[string]int{"seq": 3}); got["seq"] != 3.0 {
		t.Fatal(got)
	}
}

// A choice made after the ack (REWIND_CHECKPOINT=first-request) arrives on
// the status pipe.
func TestStatusPipeCarriesALaterChoice(t *testing.T) {
	pending := fixtureAck(`{"ok": true, "rewind": {"memory": "", "reason": "pending", "checkpoint": "first-request", "files": "off"}}`)
	h := newHarness(nil, nil, pending)
	defer h.close()
	h.mustInit(t, nil)
	if st := h.status(t); st.Memory != "" || st.Checkpoint != "first-request" {
		t.Fatalf("got %+v", st)
	}
	line := `{"rewind": {"memory": "fork", "reason": "chosen", "checkpoint": "first-request", "files": "off"}}`
	h.runJSON(t, map[string]interface{}{"status": line, "seq": 1})
	deadline := time.Now().Add(2 * time.Second)
	for h.status(t).Memory != "fork" {
		if time.Now().After(deadline) {
			t.Fatalf("got %+v", h.status(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Once a backend is chosen, a report on the pipe changes nothing: only the
// launcher's ack can (a request running inside the launcher could write there).
func TestAPipeReportCannotChangeAChosenBackend(t *testing.T) {
	h := newHarness(nil, nil, reportAck)
	defer h.close()
	h.mustInit(t, nil)
	_, before := h.getStatus(t)
	line := `{"rewind": {"memory": "none", "reason": "forged", "checkpoint": "init", "files": "off"}}`
	h.runJSON(t, map[string]interface{}{"status": line, "seq": 1})
	time.Sleep(100 * time.Millisecond)
	if _, after := h.getStatus(t); after != before {
		t.Fatalf("got %s", after)
	}
}

// REWIND_STATUS_FD names the pipe and cannot be redirected by /init's env;
// REWIND_INIT_ENV is a default /init env under every /init's own.
func TestLauncherEnvStatusFDAndDefaultInitEnv(t *testing.T) {
	// An operator who allows any action setting still cannot have the pipe moved.
	h := newHarness(nil, nil, `REWIND_INIT_ENV={"A": "from-default", "B": "from-default"}`, "REWIND_ALLOW_ACTION_SETTINGS=1")
	defer h.close()
	h.mustInit(t, map[string]interface{}{"REWIND_STATUS_FD": "1", "B": "from-init"})
	got := h.runJSON(t, map[string][]string{"env": {"REWIND_STATUS_FD", "A", "B", "REWIND_INIT_ENV"}})
	if got["REWIND_STATUS_FD"] != "4" || got["A"] != "from-default" || got["B"] != "from-init" || got["REWIND_INIT_ENV"] != nil {
		t.Fatalf("got %v", got)
	}
}
