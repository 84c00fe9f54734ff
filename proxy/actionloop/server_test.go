// server_test.go: routing (404, 405 with Allow) and the body limit (413).

package actionloop

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRouting(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/", 404, ""},
		{"POST", "/ping", 404, ""},
		{"POST", "/init/", 404, ""},
		{"GET", "/init", 405, "POST"},
		{"PUT", "/run", 405, "POST"},
		{"DELETE", "/run", 405, "POST"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, h.url+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Allow") != c.allow ||
			resp.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(string(body), `{"error":`) {
			t.Errorf("%s %s: %d allow=%q %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	h := newHarness(nil, nil, "REWIND_MAX_BODY=1000")
	defer h.close()
	want := fmt.Sprintf(`{"error":"request body exceeds the limit of %d bytes"}`+"\n", 1000)
	big := initBody([]byte(strings.Repeat("x", 1000)), false, "", nil)
	if code, reply := h.post("/init", big); code != 413 || reply != want {
		t.Fatalf("init: %d %s", code, reply)
	}
	h.mustInit(t, nil)
	if code, reply := h.post("/run", runBody(strings.Repeat("y", 1000))); code != 413 || reply != want {
		t.Fatalf("run: %d %s", code, reply)
	}
	// Chunked bodies have no Content-Length; the reader enforces the limit.
	resp, err := http.Post(h.url+"/run", "application/json", io.MultiReader(strings.NewReader(`{"value":"`), strings.NewReader(strings.Repeat("z", 2000))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked: %d", resp.StatusCode)
	}
	h.runJSON(t, map[string]int{"seq": 1})
}

func TestUnreadableBodiesAre400(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	for path, want := range map[string]string{
		"/init": `{"error":"boom"}` + "\n",
		"/run":  `{"error":"Error reading request body: boom"}` + "\n",
	} {
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, httptest.NewRequest("POST", path, iotest.ErrReader(errors.New("boom"))))
		if rec.Code != 400 || rec.Body.String() != want {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
}
