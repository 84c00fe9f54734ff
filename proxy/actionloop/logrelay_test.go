// logrelay_test.go: the relay escapes the action's sentinels and Sync
// orders the action's output before the proxy's own lines.

package actionloop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// relayTo starts a relay into a temporary file and returns both.
func relayTo(t *testing.T) (*logRelay, *os.File) {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLogRelay(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); out.Close() })
	return l, out
}

func contents(t *testing.T, f *os.File) string {
	t.Helper()
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestRelayEscapesSentinelsPrintedByTheAction(t *testing.T) {
	l, out := relayTo(t)
	if _, err := l.w.WriteString("a\n" + Sentinel + "\nb " + Sentinel + " c\n"); err != nil {
		t.Fatal(err)
	}
	l.Sync()
	got := contents(t, out)
	if strings.Contains(got, Sentinel) {
		t.Fatalf("a sentinel got through: %q", got)
	}
	want := "a\n" + EscapedSentinel + "\nb " + EscapedSentinel + " c\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestSyncCopiesAPartialLineBeforeReturning(t *testing.T) {
	l, out := relayTo(t)
	if _, err := l.w.WriteString("no newline yet"); err != nil {
		t.Fatal(err)
	}
	l.Sync()
	if got := contents(t, out); got != "no newline yet" {
		t.Fatalf("got %q", got)
	}
	if _, err := l.w.WriteString(", now\n"); err != nil {
		t.Fatal(err)
	}
	l.Sync()
	if got := contents(t, out); got != "no newline yet, now\n" {
		t.Fatalf("got %q", got)
	}
}

func TestALineLongerThanTheHoldIsCopiedWhole(t *testing.T) {
	l, out := relayTo(t)
	long := strings.Repeat("x", 3*relayHold) + Sentinel + "\n"
	go func() { _, _ = l.w.WriteString(long) }()
	// The writer runs on its own: sync until it has written everything.
	for limit := time.Now().Add(5 * time.Second); time.Now().Before(limit); time.Sleep(5 * time.Millisecond) {
		l.Sync()
		if len(contents(t, out)) >= len(long) {
			break
		}
	}
	got := contents(t, out)
	if got != strings.Repeat("x", 3*relayHold)+EscapedSentinel+"\n" {
		t.Fatalf("got %d bytes, sentinel escaped: %v", len(got), strings.HasSuffix(got, EscapedSentinel+"\n"))
	}
}

func TestCloseKeepsTheLastWords(t *testing.T) {
	l, out := relayTo(t)
	if _, err := l.w.WriteString("last words\n"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if got := contents(t, out); got != "last words\n" {
		t.Fatalf("got %q", got)
	}
}

// A sync between the two halves of a printed sentinel holds the first half
// back, so the sentinel is still escaped once whole.
func TestASentinelSplitAcrossASyncIsStillEscaped(t *testing.T) {
	l, out := relayTo(t)
	half := len(Sentinel) / 2
	if _, err := l.w.WriteString("a " + Sentinel[:half]); err != nil {
		t.Fatal(err)
	}
	l.Sync()
	if got := contents(t, out); got != "a " {
		t.Fatalf("after the first half: %q", got)
	}
	if _, err := l.w.WriteString(Sentinel[half:] + "\n"); err != nil {
		t.Fatal(err)
	}
	l.Sync()
	if got := contents(t, out); got != "a "+EscapedSentinel+"\n" {
		t.Fatalf("got %q", got)
	}
}
