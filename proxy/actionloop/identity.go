// identity.go: the snapshot user, a second identity out of the function's reach.
//
// With REWIND_USER (the function user B) and REWIND_SNAPSHOT_USER (A) both set and
// the proxy running as root, the launcher starts as A with CAP_SETUID, CAP_SETGID
// and CAP_KILL as ambient capabilities, and learns B's ids from
// REWIND_FUNCTION_IDS. It confines those capabilities with a seccomp filter
// before the action is imported, runs the action's import code with euid B,
// stays A as the snapshot process, and starts every request process as B with
// no capability left (lib/rewind/memory/identity.py). B's processes then cannot
// prlimit, renice, re-pin, stop or kill the snapshot process.

package actionloop

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"
)

// FunctionIDsEnv tells the launcher the function user's "uid:gid". Only the
// proxy sets it: /init's env cannot override it.
const FunctionIDsEnv = "REWIND_FUNCTION_IDS"

// Linux capability numbers (<linux/capability.h>).
const (
	capKill   = 5
	capSetgid = 6
	capSetuid = 7
)

// snapshotCaps are the launcher's ambient capabilities with a snapshot user.
var snapshotCaps = []uintptr{capSetuid, capSetgid, capKill}

// snapshotIdentity returns the launcher's credential and ambient capabilities:
// the snapshot user's with snapshotCaps when one is configured and fn (the
// function user's credential) is set, else fn unchanged and no capability.
func (s *Server) snapshotIdentity(fn *syscall.Credential) (*syscall.Credential, []uintptr, error) {
	if fn == nil || s.cfg.SnapshotUser == "" {
		if s.cfg.Debug {
			fmt.Fprintln(s.stderr, "rewind: the snapshot process shares the function's identity (set REWIND_USER and REWIND_SNAPSHOT_USER, and run the proxy as root, to separate them)")
		}
		return fn, nil, nil
	}
	u, err := user.Lookup(s.cfg.SnapshotUser)
	if err != nil {
		return nil, nil, fmt.Errorf("REWIND_SNAPSHOT_USER=%s: no such user", s.cfg.SnapshotUser)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, nil, fmt.Errorf("REWIND_SNAPSHOT_USER=%s: non-numeric uid/gid %s:%s", s.cfg.SnapshotUser, u.Uid, u.Gid)
	}
	if uid == 0 || gid == 0 || uint32(uid) == fn.Uid || uint32(gid) == fn.Gid {
		return nil, nil, fmt.Errorf("REWIND_SNAPSHOT_USER=%s (%d:%d) must be neither root nor REWIND_USER nor share its group", s.cfg.SnapshotUser, uid, gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, snapshotCaps, nil
}

// withFunctionIDs sets FunctionIDsEnv in env when the launcher runs as another
// user than the function (launch != fn), and removes any other value.
func withFunctionIDs(env []string, fn, launch *syscall.Credential) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if len(kv) <= len(FunctionIDsEnv) || kv[:len(FunctionIDsEnv)+1] != FunctionIDsEnv+"=" {
			out = append(out, kv)
		}
	}
	if fn != nil && launch != fn {
		out = append(out, fmt.Sprintf("%s=%d:%d", FunctionIDsEnv, fn.Uid, fn.Gid))
	}
	return out
}
