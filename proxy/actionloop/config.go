// config.go: the proxy's settings, read once from an injected environment.
//
// Handlers never call os.Getenv: everything the proxy needs, including the
// variables it forwards to the launcher, is captured here at start so a bad
// value stops the proxy before it accepts any request.

package actionloop

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Memory modes accepted by REWIND_MEMORY. The proxy only uses the value to
// decide whether to run the kernel helper; the launcher interprets it.
const (
	MemoryAuto    = "auto"
	MemoryKernel  = "kernel"
	MemoryFork    = "fork"
	MemoryFresh   = "fresh"
	MemoryInplace = "inplace"
	MemoryNone    = "none"
)

// File-restore modes accepted by REWIND_FILES. Only "local" makes the proxy
// start a sidecar; "docker" uses a sidecar on the host that someone else runs.
const (
	FilesOff    = "off"
	FilesLocal  = "local"
	FilesDocker = "docker"
)

// Defaults for the settings that have one.
const (
	DefaultCompiler    = "/bin/compile"
	DefaultActionRoot  = "./action"
	DefaultMaxBody     = 50 << 20
	DefaultMaxUnzipped = 1 << 30
	DefaultSidecar     = "unix:/run/rewind/sidecar.sock"
	DefaultSidecarCmd  = "/usr/local/bin/rewind sidecar"
	DefaultStopGrace   = 2 * time.Second
)

// Config is every setting of the proxy. Build it with Load; the zero value is
// not usable.
type Config struct {
	// Compiler is OW_COMPILER; empty (OW_COMPILER set to "") means every
	// action is run as is, like an upstream proxy without a compiler.
	Compiler string
	// WaitForAck is OW_WAIT_FOR_ACK: wait for {"ok": true} on fd 3 at start.
	WaitForAck string
	// ExecutionEnv is OW_EXECUTION_ENV: bin/exec.env must equal it.
	ExecutionEnv string
	// LogInitError is OW_LOG_INIT_ERROR: generic init errors in replies,
	// details and sentinels in the log.
	LogInitError bool
	// Debug enables diagnostics on stderr and re-init (OW_DEBUG,
	// REWIND_DEBUG or -debug; see debugOn).
	Debug bool
	// AllowActionSettings is REWIND_ALLOW_ACTION_SETTINGS: an action's /init
	// env may then set any REWIND_* setting, weaker ones included.
	AllowActionSettings bool
	// InitEnv is REWIND_INIT_ENV, a JSON object: a default /init env,
	// under every /init's own env (which wins). Not forwarded as such.
	InitEnv map[string]string
	// ActionRoot is REWIND_ACTION_ROOT: attempt N is materialised in <root>/<N>.
	ActionRoot string
	// MaxBody is REWIND_MAX_BODY: the largest /init or /run body in bytes.
	MaxBody int64
	// MaxUnzipped is REWIND_MAX_UNZIPPED: the largest total uncompressed
	// size of an action archive in bytes.
	MaxUnzipped int64
	// Memory is REWIND_MEMORY (one of the Memory* constants).
	Memory string
	// Files is REWIND_FILES (one of the Files* constants).
	Files string
	// Sidecar is REWIND_SIDECAR, "unix:/path" or "tcp:host:port".
	Sidecar string
	// SidecarCmd is REWIND_SIDECAR_CMD split on whitespace.
	SidecarCmd []string
	// User is REWIND_USER; empty when the launcher keeps the proxy's user.
	User string
	// SnapshotUser is REWIND_SNAPSHOT_USER: the snapshot process's own user
	// when User is set (identity.go); empty means it shares User's identity.
	SnapshotUser string
	// StopGrace is REWIND_STOP_GRACE: time between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// Path is the proxy's PATH, given to the compiler and the launcher.
	Path string
	// Forward holds the proxy variables the launcher inherits: every
	// __OW_* and REWIND_* variable, values kept whole.
	Forward map[string]string
	// Environ is the proxy's whole environment, given to the sidecar.
	Environ []string
}

// UsesKernelHelper reports whether the launcher is started through the
// __rewind_launch role, which asks the kernel to make it rewindable.
func (c Config) UsesKernelHelper() bool {
	return c.Memory == MemoryAuto || c.Memory == MemoryKernel
}

// SwitchesUser reports whether the launcher runs as another user.
func (c Config) SwitchesUser() bool {
	return c.User != "" && c.User != "root"
}

// Load parses environ (in os.Environ form) into a validated Config. The error
// names the variable and the accepted values, in one line.
func Load(environ []string) (Config, error) {
	env := make(map[string]string, len(environ))
	cfg := Config{Forward: map[string]string{}, Environ: append([]string(nil), environ...)}
	for _, kv := range environ {
		// Split at the first "=" only: values may contain "=" (upstream
		// truncates them there, which we deliberately do not copy).
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		env[k] = v
		if k == initEnvVar {
			continue
		}
		if strings.HasPrefix(k, "__OW_") || strings.HasPrefix(k, "REWIND_") {
			cfg.Forward[k] = v
		}
	}
	get := func(k, def string) string {
		if v, ok := env[k]; ok && v != "" {
			return v
		}
		return def
	}

	cfg.Compiler = DefaultCompiler
	if v, ok := env["OW_COMPILER"]; ok {
		cfg.Compiler = v
	}
	cfg.WaitForAck = env["OW_WAIT_FOR_ACK"]
	cfg.ExecutionEnv = env["OW_EXECUTION_ENV"]
	cfg.LogInitError = env["OW_LOG_INIT_ERROR"] != ""
	cfg.Debug = debugOn(env["OW_DEBUG"]) || debugOn(env["REWIND_DEBUG"])
	cfg.AllowActionSettings = debugOn(env["REWIND_ALLOW_ACTION_SETTINGS"])
	cfg.ActionRoot = get("REWIND_ACTION_ROOT", DefaultActionRoot)
	cfg.Path = env["PATH"]
	cfg.User = env["REWIND_USER"]
	cfg.SnapshotUser = env["REWIND_SNAPSHOT_USER"]

	var err error
	if cfg.MaxBody, err = positiveBytes(env, "REWIND_MAX_BODY", DefaultMaxBody); err != nil {
		return Config{}, err
	}
	if cfg.MaxUnzipped, err = positiveBytes(env, "REWIND_MAX_UNZIPPED", DefaultMaxUnzipped); err != nil {
		return Config{}, err
	}
	if cfg.Memory, err = oneOf(env, "REWIND_MEMORY", MemoryAuto,
		MemoryAuto, MemoryKernel, MemoryFork, MemoryFresh, MemoryInplace, MemoryNone); err != nil {
		return Config{}, err
	}
	if cfg.Files, err = oneOf(env, "REWIND_FILES", FilesOff, FilesOff, FilesLocal, FilesDocker); err != nil {
		return Config{}, err
	}
	cfg.Sidecar = get("REWIND_SIDECAR", DefaultSidecar)
	if _, _, err := parseAddress(cfg.Sidecar); err != nil {
		return Config{}, fmt.Errorf("invalid REWIND_SIDECAR %q: %v", cfg.Sidecar, err)
	}
	cfg.SidecarCmd = strings.Fields(get("REWIND_SIDECAR_CMD", DefaultSidecarCmd))
	if cfg.Files == FilesLocal && len(cfg.SidecarCmd) == 0 {
		return Config{}, fmt.Errorf("invalid REWIND_SIDECAR_CMD: empty, but REWIND_FILES=local needs a command")
	}
	if cfg.InitEnv, err = parseInitEnv(env[initEnvVar]); err != nil {
		return Config{}, err
	}
	cfg.StopGrace = DefaultStopGrace
	if v := env["REWIND_STOP_GRACE"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return Config{}, fmt.Errorf("invalid REWIND_STOP_GRACE %q: want a non-negative Go duration such as 2s or 500ms", v)
		}
		cfg.StopGrace = d
	}
	return cfg, nil
}

// initEnvVar is the variable of Config.InitEnv.
const initEnvVar = "REWIND_INIT_ENV"

// debugOn parses OW_DEBUG and REWIND_DEBUG exactly as the Python side does
// (rewind/debug.py): empty, 0, false, no and off (any case) are off.
func debugOn(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "false", "no", "off":
		return false
	}
	return true
}

// parseInitEnv reads REWIND_INIT_ENV: empty, or a JSON object whose values
// are rendered as /init's env values are (envValue).
func parseInitEnv(v string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(v) == "" {
		return out, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v), &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("invalid %s: want a JSON object such as {\"PYTHONPATH\": \"/opt/lib\"}", initEnvVar)
	}
	for k, val := range raw {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("invalid %s: bad variable name %q", initEnvVar, k)
		}
		out[k] = envValue(val)
	}
	return out, nil
}

// positiveBytes reads a byte count that must be a positive integer.
func positiveBytes(env map[string]string, key string, def int64) (int64, error) {
	v := env[key]
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid %s %q: want a positive number of bytes", key, v)
	}
	return n, nil
}

// oneOf reads an enumerated setting; matching is exact so that a typo such
// as "Kernel" is reported rather than silently meaning something else.
func oneOf(env map[string]string, key, def string, allowed ...string) (string, error) {
	v := env[key]
	if v == "" {
		return def, nil
	}
	for _, a := range allowed {
		if v == a {
			return v, nil
		}
	}
	return "", fmt.Errorf("invalid %s %q: want one of %s", key, v, strings.Join(allowed, ", "))
}

// parseAddress splits a sidecar address into a net network and address.
// Only loopback TCP is accepted: the local sidecar must not be reachable
// from outside the container.
func parseAddress(addr string) (network, address string, err error) {
	scheme, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("want unix:/path or tcp:127.0.0.1:port")
	}
	switch scheme {
	case "unix":
		if !strings.HasPrefix(rest, "/") {
			return "", "", fmt.Errorf("unix socket path must be absolute")
		}
		return "unix", rest, nil
	case "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return "", "", fmt.Errorf("tcp host must be a loopback IP address")
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return "", "", fmt.Errorf("invalid tcp port %q", port)
		}
		return "tcp", rest, nil
	}
	return "", "", fmt.Errorf("unknown scheme %q: want unix:/path or tcp:127.0.0.1:port", scheme)
}

// sortedEnv renders a variable map as a sorted KEY=VALUE list, so children
// see a deterministic environment.
func sortedEnv(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
