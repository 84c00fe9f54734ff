// run.go: POST /run — one activation, one line each way.
//
// Unlike upstream, /run is serialised (s.lock), validates the body before it
// can crash the launcher, restarts a launcher that died (except after a
// failed rewind, where it fails closed), and understands the launcher's
// {"rewind_status": "exited"} status line.

package actionloop

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Replies from the contract's /run table, plus our own.
const (
	msgNoAction   = "no action defined yet"
	msgNotArray   = "The action did not return a dictionary or array."
	msgFailClosed = "The runtime refused the request: a rewind could not be completed, so a clean state cannot be guaranteed. The reason is at GET /rewind/status of the container."
)

// handleRun serves POST /run.
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, "Error reading request body: ")
	if !ok {
		return
	}
	if !s.acquire(r.Context()) {
		return
	}
	defer s.release()
	if s.launch == nil {
		sendError(w, http.StatusInternalServerError, msgNoAction)
		return
	}
	if s.failClosed {
		sendError(w, http.StatusServiceUnavailable, msgFailClosed)
		return
	}
	// Upstream deletes raw newlines so the request is one line; a newline
	// inside a JSON string is invalid JSON anyway, so nothing valid breaks.
	line := body
	if bytes.IndexByte(body, '\n') >= 0 { // no copy of a large body without one
		line = bytes.ReplaceAll(body, []byte("\n"), nil)
	}
	if !json.Valid(line) {
		var v json.RawMessage
		msg := "syntax error"
		if err := json.Unmarshal(line, &v); err != nil {
			msg = err.Error()
		}
		sendError(w, http.StatusBadRequest, "Invalid JSON in the request body: "+msg)
		return
	}

	if s.exec != nil && s.exec.Dead() {
		s.reapLauncher()
		if s.failClosed {
			sendError(w, http.StatusServiceUnavailable, msgFailClosed)
			return
		}
	}
	if s.exec == nil {
		// The launcher died during an earlier request: start a new one
		// from the same compiled bin/ with the same environment, once the
		// files a request may have planted for it are rewound.
		if err := s.rewindFilesForRestart(); err != nil {
			s.failClosed = true
			s.debugf("cannot rewind the files before restarting the launcher: %v", err)
			sendError(w, http.StatusServiceUnavailable, msgFailClosed)
			return
		}
		e, err := StartExecutor(s.reaper, *s.launch, s.cfg.StopGrace)
		if err != nil {
			s.writeSentinels()
			sendError(w, http.StatusBadGateway, "cannot start action: "+err.Error())
			return
		}
		s.debugf("launcher restarted as pid %d", e.Pid())
		s.setExec(e)
	}

	reply, err := s.exec.Interact(line)
	if err != nil {
		// Reap first, so the launcher's last words precede the sentinels.
		s.reapLauncher()
		s.writeSentinels()
		if s.failClosed {
			// Exit code 5 while this request was queued in its stdin: the
			// request was never run, and nothing will be until a new
			// container, so it is refused like every later one.
			sendError(w, http.StatusServiceUnavailable, msgFailClosed)
			return
		}
		sendError(w, http.StatusBadRequest, msgExited)
		return
	}
	s.writeSentinels()
	switch classifyReply(reply) {
	case replyInvalid:
		sendError(w, http.StatusBadGateway, msgNotArray)
	case replyExited:
		sendError(w, http.StatusBadRequest, msgExited)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(reply)
	}
}

// reapLauncher collects a launcher that exited or stopped talking, and
// fails closed if it reported ExitRewindFailed.
func (s *Server) reapLauncher() {
	e := s.exec
	code := e.Reap(s.cfg.StopGrace)
	s.setExec(nil)
	s.debugf("launcher exited with code %d", code)
	if code == ExitRewindFailed {
		s.failClosed = true
		// The reason goes to the status endpoint and the debug log only:
		// every line on the proxy's streams lands in some activation.
		e.WaitStatusDrained(statusDrainWait)
		s.debugf("exit code %d: %s; refusing all further requests", code, s.board.failClosed())
	}
}

// Kinds of launcher reply lines.
const (
	replyOK = iota
	replyInvalid
	replyExited
)

// classifyReply checks that the reply is a JSON object or array (so null
// and NaN are rejected, unlike upstream) and spots the status line, which
// starts with a space: the launcher never forwards an action's result that
// does, so no result can be taken for a status.
func classifyReply(reply []byte) int {
	t := bytes.TrimSpace(reply)
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') || !json.Valid(t) {
		return replyInvalid
	}
	if reply[0] == ' ' && t[0] == '{' && bytes.Contains(t, []byte(`"`+StatusKey+`"`)) {
		var fields map[string]json.RawMessage
		var status string
		if json.Unmarshal(t, &fields) == nil && json.Unmarshal(fields[StatusKey], &status) == nil && status == StatusExited {
			return replyExited
		}
	}
	return replyOK
}
