// restart.go: before a crashed launcher is started again, its files are rewound.
//
// A request can write into the action directory (bin/exec, the launcher's
// modules, .pth files) and then kill the snapshot process. The restarted
// launcher would execute and import those files before it rewinds anything,
// so the proxy asks the sidecar to rewind first, and fails closed when it
// cannot.

package actionloop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// sidecarTimeout bounds one call to the sidecar made by the proxy.
const sidecarTimeout = 60 * time.Second

// sidecarReply is the part of a sidecar reply the proxy reads.
type sidecarReply struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Metrics struct {
		Checkpointed bool `json:"checkpointed"`
	} `json:"metrics"`
}

// rewindFilesForRestart rewinds the protected files to the checkpoint, if
// one was taken, before a launcher restart. Without file rewind it does
// nothing.
func (s *Server) rewindFilesForRestart() error {
	if s.cfg.Files != FilesLocal && s.cfg.Files != FilesDocker {
		return nil
	}
	network, address, err := parseAddress(s.cfg.Sidecar)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		return fmt.Errorf("cannot connect to the file sidecar: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(sidecarTimeout))
	r := bufio.NewReader(conn)
	status, err := sidecarCall(conn, r, "status", 1)
	if err != nil {
		return err
	}
	if !status.Metrics.Checkpointed {
		return nil // no request has run against a checkpoint yet
	}
	_, err = sidecarCall(conn, r, "rewind", 2)
	return err
}

// sidecarCall sends one request line and reads its reply line.
func sidecarCall(conn net.Conn, r *bufio.Reader, op string, id int) (sidecarReply, error) {
	var reply sidecarReply
	line, _ := json.Marshal(map[string]interface{}{"op": op, "id": id})
	if _, err := conn.Write(append(line, '\n')); err != nil {
		return reply, fmt.Errorf("file sidecar %s: %v", op, err)
	}
	raw, err := r.ReadBytes('\n')
	if err != nil {
		return reply, fmt.Errorf("file sidecar %s: no reply: %v", op, err)
	}
	if err := json.Unmarshal(raw, &reply); err != nil {
		return reply, fmt.Errorf("file sidecar %s: bad reply: %v", op, err)
	}
	if !reply.OK {
		return reply, fmt.Errorf("file sidecar %s failed: %s", op, reply.Error)
	}
	return reply, nil
}
