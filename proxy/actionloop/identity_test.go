// identity_test.go: the snapshot user's credential and the function ids the launcher gets.

package actionloop

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestFunctionIDsAreSetOnlyByTheProxy(t *testing.T) {
	fn := &syscall.Credential{Uid: 1001, Gid: 1002}
	snap := &syscall.Credential{Uid: 1003, Gid: 1004}
	forged := []string{"A=1", FunctionIDsEnv + "=0:0"}
	got := strings.Join(withFunctionIDs(forged, fn, snap), " ")
	if got != "A=1 "+FunctionIDsEnv+"=1001:1002" {
		t.Fatalf("two identities: %q", got)
	}
	if got := strings.Join(withFunctionIDs(forged, fn, fn), " "); got != "A=1" {
		t.Fatalf("one identity: %q", got)
	}
	if got := strings.Join(withFunctionIDs(forged, nil, nil), " "); got != "A=1" {
		t.Fatalf("no user switch: %q", got)
	}
}

func TestSnapshotIdentity(t *testing.T) {
	fn := &syscall.Credential{Uid: 4242, Gid: 4243}
	s := &Server{cfg: Config{SnapshotUser: ""}, stderr: os.Stderr}
	if cred, caps, err := s.snapshotIdentity(fn); err != nil || cred != fn || caps != nil {
		t.Fatalf("without a snapshot user: %v %v %v", cred, caps, err)
	}
	s.cfg.SnapshotUser = "no-such-user-rewind"
	if _, _, err := s.snapshotIdentity(fn); err == nil || !strings.Contains(err.Error(), "no such user") {
		t.Fatalf("missing user: %v", err)
	}
	s.cfg.SnapshotUser = "root"
	if _, _, err := s.snapshotIdentity(fn); err == nil || !strings.Contains(err.Error(), "neither root") {
		t.Fatalf("root as the snapshot user: %v", err)
	}
	if cred, caps, err := s.snapshotIdentity(nil); err != nil || cred != nil || caps != nil {
		t.Fatalf("no function user: %v %v %v", cred, caps, err)
	}
}
