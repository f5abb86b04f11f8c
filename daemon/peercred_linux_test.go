package daemon

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCredAllowed(t *testing.T) {
	none := func(int32, int) bool { return false }
	member := func(int32, int) bool { return true }
	for _, c := range []struct {
		cred   unix.Ucred
		gid    int
		groups func(int32, int) bool
		want   bool
	}{
		{unix.Ucred{Uid: 0, Gid: 0}, -1, none, true},       // root
		{unix.Ucred{Uid: 1000, Gid: 1000}, -1, none, true}, // the daemon's user
		{unix.Ucred{Uid: 1001, Gid: 1001}, -1, none, false},
		{unix.Ucred{Uid: 1001, Gid: 50}, 50, none, true},     // primary group
		{unix.Ucred{Uid: 1001, Gid: 1001}, 50, member, true}, // supplementary group
		{unix.Ucred{Uid: 1001, Gid: 1001}, 50, none, false},
	} {
		if got := credAllowed(&c.cred, 1000, c.gid, c.groups); got != c.want {
			t.Errorf("%+v group %d: %v, want %v", c.cred, c.gid, got, c.want)
		}
	}
}

// The peer of a real connection from this process is its own user.
func TestPeerAllowedSelf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("unix", path)
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ok, who := peerAllowed(c, -1)
	if !ok {
		t.Fatalf("own process refused (%s, uid %d)", who, os.Getuid())
	}
}
