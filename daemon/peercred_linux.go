package daemon

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerAllowed checks the peer's credentials (SO_PEERCRED): the daemon's
// own user, root, and, when gid >= 0, processes whose primary or
// supplementary groups include gid. who describes the peer for the log.
func peerAllowed(c net.Conn, gid int) (ok bool, who string) {
	uc, isUnix := c.(*net.UnixConn)
	if !isUnix {
		return false, "a non-Unix peer"
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false, "an unknown peer"
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return false, "an unknown peer"
	}
	who = fmt.Sprintf("uid %d (pid %d)", cred.Uid, cred.Pid)
	return credAllowed(cred, os.Getuid(), gid, inGroup), who
}

// credAllowed is the rule: root, the daemon's user (self), or a process
// whose primary or supplementary groups (groups reports the latter)
// include gid when gid >= 0.
func credAllowed(cred *unix.Ucred, self, gid int, groups func(pid int32, gid int) bool) bool {
	switch {
	case cred.Uid == 0, int(cred.Uid) == self:
		return true
	case gid < 0:
		return false
	}
	return int(cred.Gid) == gid || groups(cred.Pid, gid)
}

// inGroup reads the supplementary groups of pid from /proc.
func inGroup(pid int32, gid int) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "Groups:"); ok {
			for _, g := range strings.Fields(rest) {
				if n, err := strconv.Atoi(g); err == nil && n == gid {
					return true
				}
			}
			return false
		}
	}
	return false
}
