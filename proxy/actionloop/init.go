// init.go: POST /init — materialise, compile and start the action.
//
// The order of checks and the messages follow the upstream ActionLoop proxy
// (see the contract's /init table). A failed init leaves the proxy
// uninitialised, so the invoker (or a test) may retry.

package actionloop

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Replies from the contract's /init table.
const (
	msgReinit         = "Cannot initialize the action more than once."
	msgMissingCode    = "Missing main/no code to execute."
	msgCompileGeneric = "The action failed to generate or locate a binary. See logs for details."
	msgStartGeneric   = "Cannot start action. Check logs for details."
	msgEnvMismatch    = "Execution environment version mismatch. See logs for details."
)

// initRequest is the /init body; value.name is sent but unused.
type initRequest struct {
	Value struct {
		Main   string                     `json:"main"`
		Code   string                     `json:"code"`
		Binary bool                       `json:"binary"`
		Env    map[string]json.RawMessage `json:"env"`
	} `json:"value"`
}

// initError is a 502 at /init; compile selects the message family
// (compile vs start) of the contract.
type initError struct {
	compile bool
	err     error
}

// Error is the detailed message (what goes to the log under OW_LOG_INIT_ERROR).
func (e *initError) Error() string { return e.err.Error() }

// compileErr marks a failure to materialise or compile the action.
func compileErr(err error) error { return &initError{compile: true, err: err} }

// startErr marks a failure to start the launcher (or what it depends on).
func startErr(err error) error { return &initError{compile: false, err: err} }

// handleInit serves POST /init.
func (s *Server) handleInit(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, "")
	if !ok {
		return
	}
	if !s.acquire(r.Context()) {
		return
	}
	defer s.release()
	if s.initialized && !s.cfg.Debug {
		s.logger.Println(msgReinit)
		sendError(w, http.StatusForbidden, msgReinit)
		return
	}
	var req initRequest
	if err := json.Unmarshal(body, &req); err != nil {
		sendError(w, http.StatusBadRequest, "Error unmarshaling request: "+err.Error())
		return
	}
	if req.Value.Code == "" {
		sendError(w, http.StatusForbidden, msgMissingCode)
		return
	}
	code := []byte(req.Value.Code)
	if req.Value.Binary {
		var err error
		if code, err = base64.StdEncoding.DecodeString(req.Value.Code); err != nil {
			sendError(w, http.StatusBadRequest, "cannot decode the request: "+err.Error())
			return
		}
	}
	main := req.Value.Main
	if main == "" {
		main = "main"
	}
	// Like upstream SetEnv: merged into one map per proxy, never cleared --
	// but only once valid, and kept only when the init succeeds, so that one
	// bad /init cannot make every later one fail.
	merged, err := mergeEnv(s.env, req.Value.Env)
	if err == nil {
		err = checkActionEnv(renderEnv(req.Value.Env), s.cfg.AllowActionSettings)
	}
	if err != nil {
		sendError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.initialized {
		// -debug re-init: replace the running action.
		s.stopAction()
		s.initialized = false
	}
	previous := s.env
	s.env = merged
	if err := s.initAction(main, code); err != nil {
		s.env = previous
		s.sendInitError(w, err)
		return
	}
	s.initialized = true
	s.board.setInitialized(true)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "{\"ok\":true}\n")
}

// initialEnv copies the default /init env (REWIND_INIT_ENV) into the
// server's env map, under which every /init's env is merged.
func initialEnv(defaults map[string]string) map[string]string {
	m := make(map[string]string, len(defaults))
	for k, v := range defaults {
		m[k] = v
	}
	return m
}

// Limits of an init env, from execve: one "K=V" string at most
// MAX_ARG_STRLEN (32 pages), all of them well under ARG_MAX.
const (
	maxEnvEntry = 128 << 10
	maxEnvTotal = 1 << 20
)

// mergeEnv returns base plus the /init env, or an error naming the first
// entry that no process could be started with.
func mergeEnv(base map[string]string, add map[string]json.RawMessage) (map[string]string, error) {
	merged := make(map[string]string, len(base)+len(add))
	for k, v := range base {
		merged[k] = v
	}
	for k, raw := range add {
		v := envValue(raw)
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			return nil, fmt.Errorf("invalid environment variable name %q in the init env", k)
		case strings.ContainsRune(v, 0):
			return nil, fmt.Errorf("the init env value of %s contains a NUL byte", k)
		case len(k)+len(v)+2 > maxEnvEntry:
			return nil, fmt.Errorf("the init env value of %s is too long (%d bytes; at most %d)", k, len(v), maxEnvEntry-len(k)-2)
		}
		merged[k] = v
	}
	total := 0
	for k, v := range merged {
		total += len(k) + len(v) + 2
	}
	if total > maxEnvTotal {
		return nil, fmt.Errorf("the init env is too large (%d bytes; at most %d)", total, maxEnvTotal)
	}
	return merged, nil
}

// renderEnv renders every value of an /init env as the action sees it.
func renderEnv(raw map[string]json.RawMessage) map[string]string {
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		m[k] = envValue(v)
	}
	return m
}

// envValue renders an init env value: strings as is, anything else as
// compact JSON (42 → "42", true → "true", null → "null", objects → JSON).
func envValue(raw json.RawMessage) string {
	var s string
	// Unmarshalling null into a string succeeds and leaves it empty, so
	// only a JSON string literal is taken as text.
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '"' && json.Unmarshal(t, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

// sendInitError answers 502. Under OW_LOG_INIT_ERROR the reply is generic
// and the details go to stderr, followed by the sentinels.
func (s *Server) sendInitError(w http.ResponseWriter, err error) {
	var ie *initError
	if !errors.As(err, &ie) {
		ie = &initError{err: err}
	}
	s.debugf("init failed: %v", ie.err)
	msg := ie.err.Error()
	if !ie.compile {
		msg = "cannot start action: " + msg
	}
	if s.cfg.LogInitError {
		_, _ = s.stderr.WriteString(strings.TrimRight(ie.err.Error(), "\n") + "\n")
		s.writeSentinels()
		msg = msgStartGeneric
		if ie.compile {
			msg = msgCompileGeneric
		}
	}
	sendError(w, http.StatusBadGateway, msg)
}

// stopAction stops the launcher and the sidecar of a previous init.
func (s *Server) stopAction() {
	s.procMu.Lock()
	e, sc := s.exec, s.sidecar
	s.procMu.Unlock()
	if e != nil {
		e.Stop(s.cfg.StopGrace)
		s.setExec(nil)
	}
	if sc != nil {
		sc.Stop(s.cfg.StopGrace)
		s.setSidecar(nil)
	}
	s.launch = nil
	s.failClosed = false
	s.board.setInitialized(false)
}

// initAction materialises code in a fresh <root>/<N>, compiles it unless
// it is pre-built, starts the sidecar if configured, then the launcher.
func (s *Server) initAction(main string, code []byte) error {
	dir, err := s.nextActionDir()
	if err != nil {
		return compileErr(err)
	}
	src, bin := filepath.Join(dir, "src"), filepath.Join(dir, "bin")
	if err := Extract(code, src, s.cfg.MaxUnzipped); err != nil {
		return compileErr(err)
	}
	cred, home, err := s.credential()
	if err != nil {
		return startErr(err)
	}
	env := s.launcherEnv(dir, home)
	if cred != nil {
		// Before anything of the action's runs: the compile step runs as the
		// function user too (it imports, and pip builds, the action's files).
		if err := chownTree(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return startErr(fmt.Errorf("cannot hand the action directory to REWIND_USER %q: %v", s.cfg.User, err))
		}
	}
	if s.cfg.Compiler == "" || IsPrebuilt(filepath.Join(src, "exec")) {
		if err := os.Rename(src, bin); err != nil {
			return compileErr(err)
		}
	} else if err := s.compile(main, src, bin, env, cred); err != nil {
		return compileErr(err)
	}
	if err := s.checkExecEnv(bin); err != nil {
		return startErr(err)
	}
	if s.cfg.Files == FilesLocal {
		sc, err := StartSidecar(s.reaper, SidecarSpec{
			Cmd:       s.cfg.SidecarCmd,
			Address:   s.cfg.Sidecar,
			Env:       s.cfg.Environ,
			ActionDir: dir,
			Stdout:    s.stdout,
			Stderr:    s.stderr,
			Wait:      DefaultSidecarWait,
		}, s.cfg.StopGrace)
		if err != nil {
			return startErr(err)
		}
		s.setSidecar(sc)
	}
	argv := []string{filepath.Join(bin, "exec")}
	if s.cfg.UsesKernelHelper() {
		argv = []string{selfExe, LaunchRole, argv[0]}
	}
	launchCred, caps, err := s.snapshotIdentity(cred)
	if err != nil {
		s.stopAction()
		return startErr(err)
	}
	env = withFunctionIDs(env, cred, launchCred)
	spec := LaunchSpec{
		Argv:       argv,
		Env:        env,
		Credential: launchCred,
		Stdout:     s.stdout,
		Stderr:     s.stderr,
		WaitForAck: s.cfg.WaitForAck != "",
		OnStatus:   s.onStatus,
	}
	spec.AmbientCaps = caps
	if s.cfg.Files == FilesLocal {
		spec.Sidecar = s.cfg.Sidecar
	}
	e, err := StartExecutor(s.reaper, spec, s.cfg.StopGrace)
	if err != nil {
		s.stopAction()
		return startErr(err)
	}
	s.setExec(e)
	s.launch = &spec
	return nil
}

// nextActionDir creates <root>/<N> with N one above the highest existing
// attempt, and returns its absolute path.
func (s *Server) nextActionDir() (string, error) {
	root, err := filepath.Abs(s.cfg.ActionRoot)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return "", err
	}
	highest := 0
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > highest {
			highest = n
		}
	}
	dir := filepath.Join(root, strconv.Itoa(highest+1))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// launcherEnv is the launcher's (and the compiler's) whole environment:
// upstream's map (__OW_* of the proxy, __OW_WAIT_FOR_ACK, __OW_EXECUTION_ENV,
// __OW_PROXY_VERSION), our REWIND_* settings, PATH, HOME when switching
// user, REWIND_ACTION_DIR, and finally value.env, which overrides.
func (s *Server) launcherEnv(dir, home string) []string {
	m := make(map[string]string, len(s.cfg.Forward)+len(s.env)+6)
	for k, v := range s.cfg.Forward {
		m[k] = v
	}
	m["__OW_PROXY_VERSION"] = Version
	if s.cfg.ExecutionEnv != "" {
		m["__OW_EXECUTION_ENV"] = s.cfg.ExecutionEnv
	}
	if s.cfg.WaitForAck != "" {
		m["__OW_WAIT_FOR_ACK"] = s.cfg.WaitForAck
	}
	if s.cfg.Path != "" {
		m["PATH"] = s.cfg.Path
	}
	if home != "" {
		m["HOME"] = home
	}
	m["REWIND_ACTION_DIR"] = dir
	if s.cfg.Debug {
		// -debug, or OW_DEBUG, which the launcher does not inherit.
		m["REWIND_DEBUG"] = "1"
	}
	if s.cfg.Files == FilesLocal {
		m["REWIND_SIDECAR"] = "fd:" + strconv.Itoa(SidecarFD)
	}
	for k, v := range s.env {
		m[k] = v
	}
	if !s.cfg.UsesKernelHelper() {
		// Only the kernel probe may set it; never a stale or forged value.
		delete(m, "REWIND_KERNEL")
	}
	return sortedEnv(m)
}

// compile runs $OW_COMPILER <main> <src> <bin>. As upstream, any output
// means failure and is the error message.
func (s *Server) compile(main, src, bin string, env []string, cred *syscall.Credential) error {
	out, err := runCapture(s.reaper, []string{s.cfg.Compiler, main, src, bin}, env, cred)
	if len(out) > 0 {
		return errors.New(string(out))
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(bin, "exec")); err != nil {
		return fmt.Errorf("cannot compile: %v", err)
	}
	return nil
}

// runCapture runs argv (as cred, if set) with stdout and stderr captured
// together and waits for it through the reaper.
func runCapture(r *Reaper, argv []string, env []string, cred *syscall.Credential) ([]byte, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	child, err := r.Start(ProcSpec{Argv: argv, Env: env, Files: []*os.File{nil, pw, pw}, Credential: cred})
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	out, rerr := io.ReadAll(pr)
	pr.Close()
	<-child.Done()
	if rerr != nil {
		return out, rerr
	}
	if code := child.ExitCode(); code != 0 {
		return out, fmt.Errorf("%s exited with code %d", argv[0], code)
	}
	return out, nil
}

// checkExecEnv enforces OW_EXECUTION_ENV against bin/exec.env, as upstream.
func (s *Server) checkExecEnv(bin string) error {
	if s.cfg.ExecutionEnv == "" {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(bin, "exec.env"))
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(data)); got != s.cfg.ExecutionEnv {
		if s.cfg.LogInitError || s.cfg.Debug {
			fmt.Fprintf(s.stderr, "Expected exec.env should start with %s\nActual value: %s\n", s.cfg.ExecutionEnv, got)
		}
		return errors.New(msgEnvMismatch)
	}
	return nil
}

// credential resolves REWIND_USER (from /etc/passwd) to the launcher's
// credentials with supplementary groups cleared, and its home directory.
func (s *Server) credential() (*syscall.Credential, string, error) {
	if !s.cfg.SwitchesUser() {
		return nil, "", nil
	}
	if os.Geteuid() != 0 {
		return nil, "", fmt.Errorf("REWIND_USER=%s needs the proxy to run as root (it runs as uid %d)", s.cfg.User, os.Geteuid())
	}
	u, err := user.Lookup(s.cfg.User)
	if err != nil {
		return nil, "", fmt.Errorf("REWIND_USER=%s: no such user", s.cfg.User)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, "", fmt.Errorf("REWIND_USER=%s: non-numeric uid/gid %s:%s", s.cfg.User, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, u.HomeDir, nil
}

// chownTree gives dir and everything in it to uid:gid, without following
// symlinks (a symlink in a user's archive may point anywhere).
func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}
