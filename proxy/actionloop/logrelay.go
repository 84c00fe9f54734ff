// logrelay.go: the launcher's stdout and stderr pass through the proxy.
//
// The invoker splits a container's log into activations at the sentinel
// lines the proxy writes. An action that prints the sentinel itself would
// shift every later activation's log by one, so the launcher writes into a
// pipe, and a relay copies it to the proxy's stream with every sentinel the
// action printed escaped. Before the proxy writes its own sentinels it syncs
// the relay: every read of the pipe happens under the relay's lock, so once
// the sync holds the lock and finds the pipe empty, everything the action
// printed before its reply is out. An empty pipe, the usual case, costs one
// ioctl.

package actionloop

import (
	"bytes"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// EscapedSentinel replaces a sentinel printed by the action.
const EscapedSentinel = "XXX-THE-END-OF-A-WHISK-ACTIVATION-XXX"

const (
	// relayHold bounds a line held back while waiting for its newline;
	// longer lines are copied in pieces (keeping a tail that could still
	// become a sentinel).
	relayHold = 1 << 20
	// drainWait bounds the wait for a stopped launcher's last output.
	drainWait = time.Second
)

var sentinelBytes = []byte(Sentinel)

// logRelay copies one pipe to one stream.
type logRelay struct {
	out *os.File // the proxy's stream
	r   *os.File // our read end
	w   *os.File // the write end, which the launcher gets

	mu      sync.Mutex   // held across every read of r and what it copies
	buf     bytes.Buffer // bytes read but not yet copied (a partial line)
	chunk   []byte
	midLine bool // the last byte copied was not a newline
	drained chan struct{}
}

// newLogRelay makes the pipe and starts copying it to out.
func newLogRelay(out *os.File) (*logRelay, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	l := &logRelay{out: out, r: r, w: w, chunk: make([]byte, 64<<10), drained: make(chan struct{})}
	go l.copy()
	return l, nil
}

// copy is the relay's reader: it waits for data outside the lock and reads
// and copies it under the lock, so a sync never misses bytes in flight.
func (l *logRelay) copy() {
	defer close(l.drained)
	raw, err := l.r.SyscallConn()
	if err != nil {
		return
	}
	done := false
	for !done {
		rerr := raw.Read(func(fd uintptr) bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			n, err := syscall.Read(int(fd), l.chunk)
			if err == syscall.EAGAIN {
				return false // wait for the poller
			}
			if n <= 0 {
				done = true
				l.flush(true)
				return true
			}
			l.take(l.chunk[:n])
			return true
		})
		if rerr != nil {
			l.mu.Lock()
			l.flush(true)
			l.mu.Unlock()
			return
		}
	}
}

// take copies the complete lines of p (and of what was held back) under the
// lock; a partial line is held back unless it grows past relayHold.
func (l *logRelay) take(p []byte) {
	l.buf.Write(p)
	if nl := bytes.LastIndexByte(l.buf.Bytes(), '\n'); nl >= 0 {
		l.write(l.buf.Next(nl + 1))
	}
	if l.buf.Len() > relayHold {
		l.write(l.buf.Next(l.buf.Len() - holdBack(l.buf.Bytes())))
	}
}

// flush copies what is held back: everything at the end (final), else all
// but a tail that could still become a sentinel with the bytes to come.
func (l *logRelay) flush(final bool) {
	keep := 0
	if !final {
		keep = holdBack(l.buf.Bytes())
	}
	l.write(l.buf.Next(l.buf.Len() - keep))
}

// holdBack is how many trailing bytes of b could still become a sentinel
// with the bytes to come: a proper prefix of it after b's last whole one.
func holdBack(b []byte) int {
	if i := bytes.LastIndex(b, sentinelBytes); i >= 0 {
		b = b[i+len(sentinelBytes):]
	}
	for k := len(sentinelBytes) - 1; k > 0; k-- {
		if k <= len(b) && bytes.HasSuffix(b, sentinelBytes[:k]) {
			return k
		}
	}
	return 0
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
// been copied to the stream, and whether the stream now ends mid-line.
func (l *logRelay) Sync() (midLine bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	raw, err := l.r.SyscallConn()
	if err != nil {
		return l.midLine
	}
	for {
		var n int
		if raw.Control(func(fd uintptr) { n = pending(fd) }) != nil || n <= 0 {
			break
		}
		var got int
		_ = raw.Control(func(fd uintptr) { got, _ = syscall.Read(int(fd), l.chunk) })
		if got <= 0 {
			break
		}
		l.take(l.chunk[:got])
	}
	l.flush(false) // a partial line of the action's goes before the proxy's sentinel
	return l.midLine
}

// pending is FIONREAD: the bytes waiting in a pipe.
func pending(fd uintptr) int {
	var n int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
		return -1
	}
	return int(n)
}

// Close waits (briefly) for the launcher's last output, then releases the
// pipe: the relay ends when every writer is gone.
func (l *logRelay) Close() {
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
