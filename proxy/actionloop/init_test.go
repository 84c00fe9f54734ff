// init_test.go: the /init rows of the contract, as example transcripts
// (stdout of the proxy and its launcher included) and unit tests.

package actionloop

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// A successful init: the launcher's start-up print, then the ack reply. A
// second init is refused without a sentinel.
func ExampleServer_init() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":{"name":"a","main":"main","code":"print('hi')","binary":false,"env":null}}`)
	h.show("/init", `{"value":{"code":"print('hi')"}}`)
	// Output:
	// launcher started
	// /init -> 200 {"ok":true}
	// /init -> 403 {"error":"Cannot initialize the action more than once."}
}

// Rejected inits leave the proxy uninitialised, so a later init succeeds.
func ExampleServer_init_rejected() {
	h := newHarness(os.Stdout, devNull())
	defer h.close()
	h.show("/init", `{"value":`)
	h.show("/init", `{}`)
	h.show("/init", `{"value":{"code":""}}`)
	h.show("/init", `{"value":{"code":"!!!not base64","binary":true}}`)
	h.show("/init", `{"value":{"code":"FAIL"}}`)
	h.show("/init", `{"value":{"code":"ok"}}`)
	// Output:
	// /init -> 400 {"error":"Error unmarshaling request: unexpected end of JSON input"}
	// /init -> 403 {"error":"Missing main/no code to execute."}
	// /init -> 403 {"error":"Missing main/no code to execute."}
	// /init -> 400 {"error":"cannot decode the request: illegal base64 data at input byte 0"}
	// /init -> 502 {"error":"compile error: main=main\n"}
	// launcher started
	// /init -> 200 {"ok":true}
}

// Under OW_LOG_INIT_ERROR replies are generic; the details and the
// sentinels go to the log.
func ExampleServer_init_logInitError() {
	h := newHarness(os.Stdout, os.Stdout, "OW_LOG_INIT_ERROR=1")
	defer h.close()
	h.show("/init", `{"value":{"code":"FAIL","main":"niam"}}`)
	h.show("/init", `{"value":{"code":"ok","env":{"FIXTURE_EXIT_AT_START":"3"}}}`)
	// Output:
	// compile error: main=niam
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /init -> 502 {"error":"The action failed to generate or locate a binary. See logs for details."}
	// Command exited abruptly during initialization.
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
	// /init -> 502 {"error":"Cannot start action. Check logs for details."}
}

func TestReinitIsLoggedWithoutSentinel(t *testing.T) {
	h := newHarness(nil, nil)
	defer h.close()
	h.mustInit(t, nil)
	code, reply := h.post("/init", initBody([]byte("x"), false, "", nil))
	if code != 403 || reply != `{"error":"Cannot initialize the action more than once."}`+"\n" {
		t.Fatalf("re-init: %d %q", code, reply)
	}
	stdout, stderr := h.logs()
	if !strings.HasSuffix(stderr, " Cannot initialize the action more than once.\n") {
		t.Errorf("stderr %q lacks the re-init log line", stderr)
	}
	if strings.Contains(stdout+stderr, Sentinel) {
		t.Errorf("sentinel written on init: %q %q", stdout, stderr)
	}
}

func TestDebugAllowsReinit(t *testing.T) {
	h := newHarness(nil, nil, "REWIND_DEBUG=1")
	defer h.close()
	h.mustInit(t, nil)
	first := h.srv.launcherChild().Pid
	h.mustInit(t, nil)
	if h.srv.launcherChild().Pid == first || !gone(first, 3e9) {
		t.Fatalf("re-init did not replace launcher %d", first)
	}
	if _, err := os.Stat(filepath.Join(h.root, "action", "2", "bin", "exec")); err != nil {
		t.Fatalf("second attempt not in action/2: %v", err)
	}
}

func TestStartFailures(t *testing.T) {
	cases := []struct {
		name  string
		extra []string
		env   map[string]interface{}
		want  string
		code  string
	}{
		{"exit before ack", nil, map[string]interface{}{"FIXTURE_EXIT_AT_START": "3"},
			"cannot start action: Command exited abruptly during initialization.", ""},
		{"bad ack", nil, map[string]interface{}{"FIXTURE_ACK": `{"ok": false}`},
			"cannot start action: The action did not initialize properly.", ""},
		{"no ack, exits within 5 ms", []string{"OW_WAIT_FOR_ACK="}, nil,
			"cannot start action: command exited", "#!/bin/false\n"},
		{"exec.env mismatch", []string{"OW_EXECUTION_ENV=python:3.11"}, nil,
			"cannot start action: open ", ""},
		{"no such user", []string{"REWIND_USER=no-such-user-here"}, nil,
			"cannot start action: REWIND_USER=no-such-user-here: no such user", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(nil, nil, c.extra...)
			defer h.close()
			src := c.code
			if src == "" {
				src = "src"
			}
			code, reply := h.post("/init", initBody([]byte(src), false, "", c.env))
			if code != 502 || !strings.HasPrefix(reply, `{"error":"`+c.want) {
				t.Fatalf("got %d %s, want 502 %s", code, reply, c.want)
			}
			if h.srv.launcherChild() != nil {
				t.Fatal("failed init left state behind")
			}
			stdout, stderr := h.logs()
			if strings.Contains(stdout+stderr, Sentinel) {
				t.Error("sentinel without OW_LOG_INIT_ERROR")
			}
		})
	}
}

func TestExecEnvMismatchAndMatch(t *testing.T) {
	h := newHarness(nil, nil, "OW_EXECUTION_ENV=python:3.11")
	defer h.close()
	exe := string(fixture("launcher.py"))
	for _, tc := range []struct {
		env, want string
	}{{"python:3.10", "cannot start action: " + msgEnvMismatch}, {"python:3.11\n", ""}} {
		archive := zipOf(t, map[string]string{"exec": exe, "exec.env": tc.env})
		code, reply := h.post("/init", initBody([]byte(base64.StdEncoding.EncodeToString(archive)), true, "", nil))
		if tc.want == "" {
			if code != 200 {
				t.Fatalf("matching exec.env: %d %s", code, reply)
			}
			continue
		}
		if code != 502 || !strings.Contains(reply, tc.want) {
			t.Fatalf("mismatch: %d %s", code, reply)
		}
	}
}

func TestInitEnvValuesAndLauncherEnvironment(t *testing.T) {
	h := newHarness(nil, nil, "__OW_API_HOST=https://h?a=b", "REWIND_PATHS=/tmp", "SECRET=no", "REWIND_KERNEL=forged")
	defer h.close()
	h.mustInit(t, map[string]interface{}{"S": "x=y", "N": 42, "B": true, "Z": nil, "O": map[string]interface{}{"a": 1}})
	got := h.runJSON(t, map[string]interface{}{"env": []string{
		"S", "N", "B", "Z", "O", "__OW_API_HOST", "REWIND_PATHS", "SECRET", "PATH",
		"__OW_WAIT_FOR_ACK", "__OW_PROXY_VERSION", "REWIND_ACTION_DIR", "REWIND_KERNEL", "HOME"}})
	want := map[string]interface{}{
		"S": "x=y", "N": "42", "B": "true", "Z": "null", "O": `{"a":1}`,
		"__OW_API_HOST": "https://h?a=b", "REWIND_PATHS": "/tmp", "SECRET": nil,
		"PATH": os.Getenv("PATH"), "__OW_WAIT_FOR_ACK": "1", "__OW_PROXY_VERSION": Version,
		"REWIND_ACTION_DIR": filepath.Join(h.root, "action", "1"), "REWIND_KERNEL": nil, "HOME": nil,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
}

func TestMainDefaultsAndIsPassedToCompiler(t *testing.T) {
	for _, main := range []string{"", "niam"} {
		h := newHarness(nil, nil)
		h.post("/init", initBody([]byte("src"), false, main, nil))
		got, err := os.ReadFile(filepath.Join(h.root, "action", "1", "bin", "main.txt"))
		h.close()
		want := main
		if want == "" {
			want = "main"
		}
		if err != nil || string(got) != want {
			t.Fatalf("main %q: compiler saw %q (%v)", main, got, err)
		}
	}
}

func TestPrebuiltActionsSkipTheCompiler(t *testing.T) {
	exe := string(fixture("launcher.py"))
	zipped := base64.StdEncoding.EncodeToString(zipOf(t, map[string]string{"exec": exe, "data/x.txt": "x"}))
	tgz := base64.StdEncoding.EncodeToString(tarGzOf(t, map[string]string{"exec": exe}))
	for name, body := range map[string][]byte{
		"shebang text": initBody([]byte(exe), false, "", nil),
		"zip":          initBody([]byte(zipped), true, "", nil),
		"tar.gz":       initBody([]byte(tgz), true, "", nil),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(nil, nil)
			defer h.close()
			if code, reply := h.post("/init", body); code != 200 {
				t.Fatalf("%d %s", code, reply)
			}
			if _, err := os.Stat(filepath.Join(h.root, "action", "1", "bin", "main.txt")); !os.IsNotExist(err) {
				t.Fatal("pre-built action went through the compiler")
			}
			h.runJSON(t, map[string]interface{}{"a": 1})
		})
	}
}

func TestBrokenArchiveIs502(t *testing.T) {
	broken := base64.StdEncoding.EncodeToString([]byte("PK\x03\x04 this is not a zip"))
	h := newHarness(nil, nil)
	code, reply := h.post("/init", initBody([]byte(broken), true, "", nil))
	h.close()
	if code != 502 || !strings.Contains(reply, "cannot unzip the action: zip: not a valid zip file") {
		t.Fatalf("%d %s", code, reply)
	}
	h = newHarness(nil, nil, "OW_LOG_INIT_ERROR=1")
	defer h.close()
	code, reply = h.post("/init", initBody([]byte(broken), true, "", nil))
	if code != 502 || !strings.Contains(reply, msgCompileGeneric) {
		t.Fatalf("%d %s", code, reply)
	}
	if _, stderr := h.logs(); !strings.Contains(stderr, "not a valid zip file") || strings.Count(stderr, Sentinel) != 1 {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestLauncherRunsAsRewindUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	h := newHarness(nil, nil, "REWIND_USER=nobody")
	defer h.close()
	// nobody must be able to reach the action directory.
	if err := os.Chmod(h.root, 0o755); err != nil {
		t.Fatal(err)
	}
	h.mustInit(t, nil)
	got := h.runJSON(t, map[string]interface{}{"pid": 1})
	if got["uid"] != 65534.0 || got["gid"] != 65534.0 || len(got["groups"].([]interface{})) != 0 {
		t.Fatalf("launcher credentials %v", got)
	}
	env := h.runJSON(t, map[string]interface{}{"env": []string{"HOME"}})
	if env["HOME"] != "/nonexistent" {
		t.Fatalf("HOME = %v", env["HOME"])
	}
	fi, err := os.Stat(filepath.Join(h.root, "action", "1", "bin", "exec"))
	if err != nil || fi.Sys() == nil {
		t.Fatal(err)
	}
}

// zipOf builds a zip archive; names ending in "@" are symlinks to the value.
func zipOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	// Symlinks first, so that entries written through them come after.
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		si, sj := strings.HasSuffix(names[i], "@"), strings.HasSuffix(names[j], "@")
		if si != sj {
			return si
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		content := files[name]
		hdr := &zip.FileHeader{Name: strings.TrimSuffix(name, "@"), Method: zip.Deflate}
		hdr.SetMode(0o755)
		if strings.HasSuffix(name, "@") {
			hdr.SetMode(os.ModeSymlink | 0o777)
		}
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarGzOf builds a gzipped tar archive of regular files.
func tarGzOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
