// logrelay.go: the launcher's stdout and stderr pass through the proxy.
//
// The invoker splits a container's log into activations at the sentinel
// lines the proxy writes. An action that prints the sentinel itself would
// shift every later activation's log by one, so the launcher writes into a
// pipe, and a relay copies it to the proxy's stream with every sentinel the
// action printed escaped. Before the proxy writes its own sentinels it syncs
// the relay: it writes a random marker into the same pipe and waits until
// the relay has copied everything in front of it, which includes all the
// action printed before its reply.

package actionloop

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"time"
)

// EscapedSentinel replaces a sentinel printed by the action.
const EscapedSentinel = "XXX-THE-END-OF-A-WHISK-ACTIVATION-XXX"

const (
	// relayHold bounds a line held back while waiting for its newline;
	// longer lines are copied in pieces (keeping a tail that could still
	// become a sentinel or a marker).
	relayHold = 1 << 20
	// syncWait bounds a sync: the real stream may be slow, never stuck.
	syncWait = 5 * time.Second
	// drainWait bounds the wait for a stopped launcher's last output.
	drainWait = time.Second
)

var sentinelBytes = []byte(Sentinel)

// logRelay copies one pipe to one stream.
type logRelay struct {
	out *os.File // the proxy's stream
	r   *os.File // our read end
	w   *os.File // the write end: the launcher gets it, we write sync markers

	mu      sync.Mutex // serialises syncs and Close
	midLine bool       // the last byte copied was not a newline (copy goroutine's)
	marker  chan []byte
	synced  chan struct{}
	drained chan struct{}
}

// newLogRelay makes the pipe and starts copying it to out.
func newLogRelay(out *os.File) (*logRelay, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	l := &logRelay{
		out: out, r: r, w: w,
		marker:  make(chan []byte, 1),
		synced:  make(chan struct{}, 1),
		drained: make(chan struct{}),
	}
	go l.copy()
	return l, nil
}

// copy is the relay's only reader.
func (l *logRelay) copy() {
	defer close(l.drained)
	var buf bytes.Buffer
	chunk := make([]byte, 64<<10)
	var want []byte
	for {
		n, err := l.r.Read(chunk)
		buf.Write(chunk[:n])
		for {
			if want == nil {
				select {
				case want = <-l.marker:
				default:
				}
			}
			nl := bytes.IndexByte(buf.Bytes(), '\n')
			if nl < 0 {
				break
			}
			line := buf.Next(nl + 1)
			if want != nil && bytes.HasSuffix(line, want) {
				// What precedes the marker is a partial line of the action's.
				l.write(line[:len(line)-len(want)])
				want = nil
				l.synced <- struct{}{}
			} else {
				l.write(line)
			}
		}
		if keep := len(sentinelBytes) + 64; buf.Len() > relayHold {
			l.write(buf.Next(buf.Len() - keep))
		}
		if err != nil {
			l.write(buf.Bytes())
			return
		}
	}
}

// write copies p to the stream with the action's sentinels escaped.
func (l *logRelay) write(p []byte) {
	if len(p) == 0 {
		return
	}
	if bytes.Contains(p, sentinelBytes) {
		p = bytes.ReplaceAll(p, sentinelBytes, []byte(EscapedSentinel))
	}
	l.midLine = p[len(p)-1] != '\n'
	_, _ = l.out.Write(p)
}

// Sync returns once everything written into the pipe before the call has
// been copied to the stream (or after syncWait), and whether the stream
// now ends in the middle of a line.
func (l *logRelay) Sync() (midLine bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return false
	}
	marker := []byte("\x00rewind-sync-" + hex.EncodeToString(nonce) + "\n")
	select { // what an earlier sync that timed out left behind
	case <-l.marker:
	default:
	}
	select {
	case <-l.synced:
	default:
	}
	l.marker <- marker
	if _, err := l.w.Write(marker); err != nil {
		<-l.marker
		return false
	}
	select {
	case <-l.synced: // sent after the copy goroutine's last write
		return l.midLine
	case <-l.drained:
		return l.midLine
	case <-time.After(syncWait):
		return false
	}
}

// Close waits (briefly) for the launcher's last output, then releases the
// pipe: the relay ends when every writer is gone.
func (l *logRelay) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Close()
	select {
	case <-l.drained:
	case <-time.After(drainWait):
		l.r.Close() // a leftover writer keeps the pipe open: stop copying
		<-l.drained
	}
}

// logRelays are the relays of stdout and stderr; nil where the stream is.
type logRelays [2]*logRelay

// newLogRelays starts a relay for each non-nil stream.
func newLogRelays(streams ...*os.File) (logRelays, error) {
	var ls logRelays
	for i, out := range streams {
		if out == nil {
			continue
		}
		l, err := newLogRelay(out)
		if err != nil {
			ls.Close()
			return logRelays{}, err
		}
		ls[i] = l
	}
	return ls, nil
}

// writer is the descriptor the launcher writes stream i into.
func (ls logRelays) writer(i int, stream *os.File) *os.File {
	if ls[i] == nil {
		return stream
	}
	return ls[i].w
}

// Sync syncs every relay; midLine[i] tells that stream i ends mid-line.
func (ls logRelays) Sync() (midLine [2]bool) {
	for i, l := range ls {
		if l != nil {
			midLine[i] = l.Sync()
		}
	}
	return midLine
}

// Close closes every relay (an io.Closer, so it can join a cleanup list).
func (ls logRelays) Close() error {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
	return nil
}
