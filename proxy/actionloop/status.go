// status.go: GET /rewind/status — which memory backend runs, and why.
//
// Operators need the backend the launcher chose at the checkpoint and why
// (auto may fall back), and whether the runtime failed closed; the
// runtime's own streams must stay silent, as they are users' activation
// logs. A function can fetch this endpoint too, so nothing in it may change
// from one request to the next: no counters, no per-request state. It
// changes only at /init, when a (re)started launcher reports its choice,
// and once when the runtime fails closed, after which no request runs.
//
// The launcher reports its choice as an extra "rewind" field of its ack
// line (an upstream proxy reads only "ok"), and what happens after the ack
// (the choice under REWIND_CHECKPOINT=first-request, a launcher that does
// not ack, the fail-closed reason) as JSON lines on a status pipe that only
// this proxy opens and names in REWIND_STATUS_FD. Request processes never
// hold that pipe, and a fail-closed reason counts only once the launcher
// has really exited with ExitRewindFailed.

package actionloop

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StatusPath is the status endpoint's path.
const StatusPath = "/rewind/status"

// StatusFDEnv names the launcher's descriptor of the status pipe.
const StatusFDEnv = "REWIND_STATUS_FD"

// statusDrainWait bounds the wait for a failed launcher's last status line.
const statusDrainWait = time.Second

// msgFailUnreported is the fail-closed reason when the launcher gave none
// (an upstream-style launcher, or one killed before it could say why).
const msgFailUnreported = "the launcher exited with code 5 (a rewind could not be completed) without saying why"

// LauncherReport is the launcher's description of its memory backend.
type LauncherReport struct {
	// Memory is the backend chosen at the checkpoint (kernel, inplace,
	// fork, fresh, none), or "" while it is not chosen yet.
	Memory string `json:"memory"`
	// Reason says why, e.g. why REWIND_MEMORY=auto fell back.
	Reason string `json:"reason"`
	// Checkpoint is the checkpoint policy (REWIND_CHECKPOINT).
	Checkpoint string `json:"checkpoint"`
	// Files is the file rewind mode (REWIND_FILES).
	Files string `json:"files"`
}

// StatusMessage is one line the launcher sends: an ack's "rewind" field
// or a line of the status pipe.
type StatusMessage struct {
	Rewind       *LauncherReport `json:"rewind,omitempty"`
	FailedClosed *string         `json:"failed_closed,omitempty"`
	// fromAck marks the ack's report, which always applies; a report on
	// the pipe applies only while no backend is chosen, because a request
	// that runs inside the launcher (kernel, none, the first request under
	// first-request) could write to the pipe too.
	fromAck bool
}

// Status is the body of GET /rewind/status. Its fields are in a fixed
// order and it holds no counter or time, so two requests in the same state
// get byte-identical bodies.
type Status struct {
	// Proxy is this proxy's version.
	Proxy string `json:"proxy"`
	// Initialized is true after a successful /init.
	Initialized bool `json:"initialized"`
	// Reported is false while no launcher has described itself (before
	// init, or an upstream launcher, which sends only {"ok": true}).
	Reported bool `json:"reported"`
	LauncherReport
	// FailedClosed is true once a rewind could not be completed; every
	// /run is then refused with 503. FailReason says why.
	FailedClosed bool   `json:"failed_closed"`
	FailReason   string `json:"fail_reason"`
}

// statusBoard holds the status under its own lock: a function may fetch
// it while its own /run holds the server's lock.
type statusBoard struct {
	mu          sync.Mutex
	st          Status
	pendingFail string // the launcher's fail-closed reason, until its exit confirms it
}

func newStatusBoard() *statusBoard {
	return &statusBoard{st: Status{Proxy: Version}}
}

// snapshot returns the current status.
func (b *statusBoard) snapshot() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

// apply records a launcher message; it reports whether the status changed.
func (b *statusBoard) apply(m StatusMessage) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.FailedClosed != nil {
		b.pendingFail = *m.FailedClosed
	}
	if m.Rewind == nil || (b.st.Reported && b.st.LauncherReport == *m.Rewind) {
		return false
	}
	if !m.fromAck && b.st.Memory != "" {
		return false
	}
	b.st.Reported = true
	b.st.LauncherReport = *m.Rewind
	return true
}

// setInitialized marks /init done, or (false) forgets the action after a
// -debug re-init.
func (b *statusBoard) setInitialized(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.st.Initialized = true
		return
	}
	b.st = Status{Proxy: Version}
	b.pendingFail = ""
}

// failClosed records that the runtime failed closed, with the launcher's
// reason if it sent one; it returns the reason.
func (b *statusBoard) failClosed() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.st.FailedClosed {
		b.st.FailedClosed = true
		b.st.FailReason = b.pendingFail
		if b.st.FailReason == "" {
			b.st.FailReason = msgFailUnreported
		}
	}
	return b.st.FailReason
}

// handleStatus serves GET /rewind/status.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		sendError(w, http.StatusMethodNotAllowed, "method not allowed: use GET")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	sendJSON(w, http.StatusOK, s.board.snapshot())
}

// onStatus is the launcher's status callback (LaunchSpec.OnStatus).
func (s *Server) onStatus(m StatusMessage) {
	if s.board.apply(m) {
		st := s.board.snapshot()
		s.debugf("memory backend %q (%s); checkpoint %q, files %q", st.Memory, st.Reason, st.Checkpoint, st.Files)
	}
	if m.FailedClosed != nil {
		s.debugf("the launcher is failing closed: %s", *m.FailedClosed)
	}
}

// parseAck decodes the launcher's ack line: ok as upstream decodes it, and
// the optional report, which is ignored when it does not parse (a launcher
// of another runtime may use the name for something else).
func parseAck(line []byte) (ok bool, report *LauncherReport) {
	var ack struct {
		Ok     bool            `json:"ok"`
		Rewind json.RawMessage `json:"rewind"`
	}
	if json.Unmarshal(line, &ack) != nil || !ack.Ok {
		return false, nil
	}
	var r LauncherReport
	if len(ack.Rewind) == 0 || json.Unmarshal(ack.Rewind, &r) != nil || string(ack.Rewind) == "null" {
		return true, nil
	}
	return true, &r
}

// withStatusFD sets REWIND_STATUS_FD=fd in env, replacing any value that
// came from the proxy's environment or an /init's env.
func withStatusFD(env []string, fd int) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, StatusFDEnv+"=") {
			out = append(out, kv)
		}
	}
	return append(out, StatusFDEnv+"="+strconv.Itoa(fd))
}

// readStatus is the only reader of the status pipe: it hands every JSON
// line to onStatus and closes done at EOF. Lines that do not parse are
// dropped: only the launcher's own code writes here.
func readStatus(r *os.File, onStatus func(StatusMessage), done chan<- struct{}) {
	defer close(done)
	defer r.Close()
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && err == nil {
			var m StatusMessage
			if json.Unmarshal(line, &m) == nil && onStatus != nil {
				onStatus(m)
			}
		}
		if err != nil {
			return
		}
	}
}
