// sidecar_test.go: starting the local sidecar at /init, and its failures.

package actionloop

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInitStartsTheSidecarBeforeTheLauncher(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sc.sock")
	h := newHarness(nil, nil, "REWIND_FILES=local", "REWIND_SIDECAR=unix:"+sock, "REWIND_SIDECAR_CMD="+testdata("sidecar.py"))
	defer h.close()
	h.mustInit(t, nil)
	var info struct {
		Argv      []string `json:"argv"`
		ActionDir string   `json:"action_dir"`
	}
	b, err := os.ReadFile(sock + ".info")
	if err != nil || json.Unmarshal(b, &info) != nil {
		t.Fatalf("sidecar did not record its start: %v", err)
	}
	dir := filepath.Join(h.root, "action", "1")
	if info.ActionDir != dir || strings.Join(info.Argv, " ") != "--driver local --listen unix:"+sock {
		t.Fatalf("%+v", info)
	}
	if got := h.runJSON(t, map[string][]string{"env": {"REWIND_ACTION_DIR"}}); got["REWIND_ACTION_DIR"] != dir {
		t.Fatalf("launcher REWIND_ACTION_DIR %v", got)
	}
	h.srv.procMu.Lock()
	sc := h.srv.sidecar
	h.srv.procMu.Unlock()
	h.srv.Close()
	if !gone(sc.Pid, 5*time.Second) {
		t.Fatal("sidecar survived Close")
	}
}

func TestSidecarThatExitsFailsInit(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sc.sock")
	h := newHarness(nil, nil, "REWIND_FILES=local", "REWIND_SIDECAR=unix:"+sock, "REWIND_SIDECAR_CMD="+testdata("sidecar_fail.sh"))
	defer h.close()
	code, reply := h.post("/init", initBody([]byte("src"), false, "", nil))
	if code != 502 || reply != `{"error":"cannot start action: the file sidecar exited with code 4 before listening on unix:`+sock+`"}`+"\n" {
		t.Fatalf("%d %s", code, reply)
	}
	if stdout, _ := h.logs(); strings.Contains(stdout, "launcher started") {
		t.Fatal("launcher started without a sidecar")
	}
}

func TestSidecarThatNeverListensTimesOut(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sc.sock")
	start := time.Now()
	_, err := StartSidecar(SharedReaper(), SidecarSpec{
		Cmd:     []string{"/bin/sh", "-c", "exec sleep 30"},
		Address: "unix:" + sock,
		Wait:    300 * time.Millisecond,
	}, 100*time.Millisecond)
	if err == nil || err.Error() != "the file sidecar did not listen on unix:"+sock+" within 300ms" {
		t.Fatalf("%v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("timeout not honoured")
	}
}

func TestSidecarOverTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	listen := `import socket, sys, time
host, port = sys.argv[4].split(":")[1:]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port))); s.listen(); time.sleep(60)`
	child, err := StartSidecar(SharedReaper(), SidecarSpec{
		Cmd:     []string{"/usr/bin/python3", "-c", listen},
		Address: "tcp:" + addr,
		Wait:    5 * time.Second,
	}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	child.Stop(time.Second)
}
