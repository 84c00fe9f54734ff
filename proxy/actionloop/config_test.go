// config_test.go: Load's defaults, parsing and one-line errors.

package actionloop

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load([]string{"PATH=/bin", "HOME=/root"})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Compiler: DefaultCompiler, ActionRoot: "./action", MaxBody: 52428800, MaxUnzipped: 1 << 30,
		Memory: MemoryAuto, Files: FilesOff, Sidecar: "unix:/run/rewind/sidecar.sock",
		SidecarCmd: []string{"/usr/local/bin/rewind", "sidecar"}, StopGrace: 2 * time.Second,
		Path: "/bin", Forward: map[string]string{}, Environ: []string{"PATH=/bin", "HOME=/root"},
		InitEnv: map[string]string{},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	if !cfg.UsesKernelHelper() || cfg.SwitchesUser() {
		t.Fatal("auto must use the kernel helper; no user switch by default")
	}
}

func TestLoadParsesEverything(t *testing.T) {
	cfg, err := Load([]string{
		"OW_COMPILER=", "OW_WAIT_FOR_ACK=1", "OW_EXECUTION_ENV=e", "OW_LOG_INIT_ERROR=1", "REWIND_DEBUG=1",
		"REWIND_ACTION_ROOT=/a", "REWIND_MAX_BODY=10", "REWIND_MAX_UNZIPPED=20", "REWIND_MEMORY=fork",
		"REWIND_FILES=local", "REWIND_SIDECAR=tcp:127.0.0.1:4000", "REWIND_SIDECAR_CMD= /x  y ",
		"REWIND_USER=root", "REWIND_STOP_GRACE=250ms", "__OW_API_HOST=http://h/?a=b=c", "OTHER=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Compiler != "" || cfg.WaitForAck != "1" || cfg.ExecutionEnv != "e" || !cfg.LogInitError || !cfg.Debug ||
		cfg.ActionRoot != "/a" || cfg.MaxBody != 10 || cfg.MaxUnzipped != 20 || cfg.Memory != MemoryFork ||
		cfg.Files != FilesLocal || cfg.Sidecar != "tcp:127.0.0.1:4000" || !reflect.DeepEqual(cfg.SidecarCmd, []string{"/x", "y"}) ||
		cfg.StopGrace != 250*time.Millisecond || cfg.UsesKernelHelper() || cfg.SwitchesUser() {
		t.Fatalf("%+v", cfg)
	}
	wantFwd := map[string]string{
		"__OW_API_HOST": "http://h/?a=b=c", "REWIND_DEBUG": "1", "REWIND_ACTION_ROOT": "/a", "REWIND_MAX_BODY": "10",
		"REWIND_MAX_UNZIPPED": "20", "REWIND_MEMORY": "fork", "REWIND_FILES": "local", "REWIND_SIDECAR": "tcp:127.0.0.1:4000",
		"REWIND_SIDECAR_CMD": " /x  y ", "REWIND_USER": "root", "REWIND_STOP_GRACE": "250ms",
	}
	if !reflect.DeepEqual(cfg.Forward, wantFwd) {
		t.Fatalf("forward %v", cfg.Forward)
	}
	if cfg, _ := Load([]string{"OW_DEBUG=1"}); !cfg.Debug {
		t.Fatal("OW_DEBUG ignored")
	}
}

func TestLoadErrors(t *testing.T) {
	cases := map[string]string{
		"REWIND_MEMORY=Kernel":           `invalid REWIND_MEMORY "Kernel": want one of auto, kernel, fork, fresh, inplace, none`,
		"REWIND_FILES=s3":                `invalid REWIND_FILES "s3": want one of off, local, docker`,
		"REWIND_MAX_BODY=0":              `invalid REWIND_MAX_BODY "0": want a positive number of bytes`,
		"REWIND_MAX_UNZIPPED=1G":         `invalid REWIND_MAX_UNZIPPED "1G": want a positive number of bytes`,
		"REWIND_STOP_GRACE=2":            `invalid REWIND_STOP_GRACE "2"`,
		"REWIND_STOP_GRACE=-1s":          `invalid REWIND_STOP_GRACE "-1s"`,
		"REWIND_SIDECAR=/run/s.sock":     `invalid REWIND_SIDECAR "/run/s.sock": want unix:/path or tcp:127.0.0.1:port`,
		"REWIND_SIDECAR=unix:rel.sock":   `invalid REWIND_SIDECAR "unix:rel.sock": unix socket path must be absolute`,
		"REWIND_SIDECAR=tcp:10.0.0.1:5":  `invalid REWIND_SIDECAR "tcp:10.0.0.1:5": tcp host must be a loopback IP address`,
		"REWIND_SIDECAR=tcp:127.0.0.1:x": `invalid REWIND_SIDECAR "tcp:127.0.0.1:x": invalid tcp port "x"`,
	}
	for env, want := range cases {
		_, err := Load([]string{env})
		if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want %s", env, err, want)
		}
	}
	if _, err := Load([]string{"REWIND_FILES=local", "REWIND_SIDECAR_CMD=  "}); err == nil {
		t.Error("empty sidecar command accepted with REWIND_FILES=local")
	}
}

// REWIND_DEBUG and OW_DEBUG parse as in rewind/debug.py: "0" is off (it
// used to turn debugging on here and off in the sidecar).
func TestDebugParsesLikeThePythonSide(t *testing.T) {
	for _, v := range []string{"", "0", "false", "no", "off", "FALSE", " 0 ", "No"} {
		if debugOn(v) {
			t.Errorf("%q turned debugging on", v)
		}
		if cfg, _ := Load([]string{"REWIND_DEBUG=" + v, "OW_DEBUG=" + v}); cfg.Debug {
			t.Errorf("REWIND_DEBUG=OW_DEBUG=%q turned debugging on", v)
		}
	}
	for _, v := range []string{"1", "yes", "true", "on", "/tmp/action.log"} {
		if !debugOn(v) {
			t.Errorf("%q left debugging off", v)
		}
	}
	if cfg, _ := Load([]string{"REWIND_DEBUG=0", "OW_DEBUG=1"}); !cfg.Debug {
		t.Error("OW_DEBUG=1 ignored next to REWIND_DEBUG=0")
	}
}

// REWIND_INIT_ENV is a default /init env; it is not forwarded as itself.
func TestLoadInitEnv(t *testing.T) {
	cfg, err := Load([]string{`REWIND_INIT_ENV={"PYTHONPATH": "/opt/lib", "N": 42, "E": ""}`})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"PYTHONPATH": "/opt/lib", "N": "42", "E": ""}
	if !reflect.DeepEqual(cfg.InitEnv, want) {
		t.Fatalf("init env %v", cfg.InitEnv)
	}
	if _, ok := cfg.Forward["REWIND_INIT_ENV"]; ok {
		t.Fatal("REWIND_INIT_ENV forwarded")
	}
	for _, bad := range []string{"REWIND_INIT_ENV=[1]", "REWIND_INIT_ENV=x", `REWIND_INIT_ENV={"A=B": "1"}`, "REWIND_INIT_ENV=null"} {
		if _, err := Load([]string{bad}); err == nil || !strings.Contains(err.Error(), "invalid REWIND_INIT_ENV") {
			t.Errorf("%s: got %v", bad, err)
		}
	}
}
