// server.go: the proxy's HTTP surface and the state shared by /init and /run.
//
// Routing is explicit, unlike upstream: /init and /run accept POST only
// (405 with Allow otherwise), GET /rewind/status reports the memory backend
// (status.go), any other path is 404, and bodies over REWIND_MAX_BODY are
// refused with 413 before they reach the launcher.

package actionloop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
)

// Version is this proxy's version, exported to launchers as
// __OW_PROXY_VERSION.
const Version = "0.1.0"

// Server serves the ActionLoop protocol for one action. Build it with
// NewServer; it implements http.Handler.
type Server struct {
	cfg    Config
	reaper *Reaper
	stdout *os.File
	stderr *os.File
	// logger writes the one line the contract requires on re-init, with a
	// timestamp like upstream's log.Println.
	logger *log.Logger

	// lock is a FIFO mutex (a one-slot channel: the runtime hands a freed
	// slot to the longest-waiting sender, which sync.Mutex does not
	// promise). Holding it guards the action state below and the
	// launcher's stdin/fd 3, so exactly one activation talks to the
	// launcher at a time and queued /run calls are served in arrival order.
	lock        chan struct{}
	env         map[string]string // value.env of every /init, merged, never cleared
	initialized bool
	launch      *LaunchSpec // how to (re)start the launcher; nil before init
	failClosed  bool        // the launcher exited with ExitRewindFailed

	// board is what GET /rewind/status reports, under its own lock.
	board *statusBoard

	// procMu guards the two process handles, which Close reads without
	// waiting for a /run that may never finish.
	procMu  sync.Mutex
	exec    *Executor // nil when no launcher is running
	sidecar *Child    // nil unless REWIND_FILES=local and initialised
}

// NewServer builds a server. stdout and stderr are the container's log
// streams: the launcher and sidecar inherit them and sentinels go there.
func NewServer(cfg Config, stdout, stderr *os.File) *Server {
	return &Server{
		cfg:    cfg,
		reaper: SharedReaper(),
		stdout: stdout,
		stderr: stderr,
		logger: log.New(stderr, "", log.LstdFlags),
		lock:   make(chan struct{}, 1),
		env:    initialEnv(cfg.InitEnv),
		board:  newStatusBoard(),
	}
}

// ServeHTTP routes /init and /run.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var handle func(http.ResponseWriter, *http.Request)
	switch r.URL.Path {
	case "/init":
		handle = s.handleInit
	case "/run":
		handle = s.handleRun
	case StatusPath:
		s.handleStatus(w, r)
		return
	default:
		sendError(w, http.StatusNotFound, "not found: "+r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		sendError(w, http.StatusMethodNotAllowed, "method not allowed: use POST")
		return
	}
	handle(w, r)
}

// Close stops the launcher's and the sidecar's process groups. It does not
// wait for a /run in progress, which would then answer "command exited".
func (s *Server) Close() {
	s.procMu.Lock()
	e, sc := s.exec, s.sidecar
	s.procMu.Unlock()
	if e != nil {
		e.Stop(s.cfg.StopGrace)
	}
	if sc != nil {
		sc.Stop(s.cfg.StopGrace)
	}
}

// setExec and setSidecar replace a process handle; callers hold s.lock.
func (s *Server) setExec(e *Executor) {
	s.procMu.Lock()
	s.exec = e
	s.procMu.Unlock()
}

func (s *Server) setSidecar(c *Child) {
	s.procMu.Lock()
	s.sidecar = c
	s.procMu.Unlock()
}

// acquire takes s.lock, giving up if the client goes away while queued.
func (s *Server) acquire(ctx context.Context) bool {
	select {
	case s.lock <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// release frees s.lock.
func (s *Server) release() { <-s.lock }

// readBody reads a request body of at most MaxBody bytes. On failure it has
// already answered: 413 over the limit, else 400 with prefix + the error.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, prefix string) ([]byte, bool) {
	if r.ContentLength > s.cfg.MaxBody {
		s.sendTooLarge(w)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.sendTooLarge(w)
		} else {
			sendError(w, http.StatusBadRequest, prefix+err.Error())
		}
		return nil, false
	}
	return body, true
}

// sendTooLarge answers 413 and closes the connection: the rest of the body
// is not worth reading.
func (s *Server) sendTooLarge(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	sendError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", s.cfg.MaxBody))
}

// writeSentinels ends an activation's log on both streams. Errors are
// ignored: the log is gone, and the reply must still go out.
func (s *Server) writeSentinels() {
	var midLine [2]bool
	if s.exec != nil {
		midLine = s.exec.SyncLogs() // the action's output first, then the sentinels
	}
	for i, stream := range []*os.File{s.stdout, s.stderr} {
		line := Sentinel + "\n"
		if midLine[i] {
			line = "\n" + line // on a line of its own, as the invoker looks for it
		}
		_, _ = stream.WriteString(line)
	}
}

// debugf writes a diagnostic to stderr under -debug only: in normal
// operation every line on the proxy's streams is attributed to an activation.
func (s *Server) debugf(format string, args ...interface{}) {
	if s.cfg.Debug {
		fmt.Fprintf(s.stderr, "rewind proxy: "+format+"\n", args...)
	}
}

// sendError answers {"error": msg} + "\n" as upstream's sendError does.
func sendError(w http.ResponseWriter, status int, msg string) {
	sendJSON(w, status, struct {
		Error string `json:"error"`
	}{Error: msg})
}

// sendJSON answers v as one JSON line, without HTML escaping (messages may
// quote action output containing < or &).
func sendJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a failed write means the client left
}
