package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/wire"
)

// changelogBytes returns the master's changelog files' contents, the
// record of every change it made.
func (c *cluster) changelogBytes() []byte {
	c.t.Helper()
	var all []byte
	files, _ := filepath.Glob(filepath.Join(c.dir, "master", "changelog.*.mfs"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			c.t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// handshake dials addr and runs a client handshake with cfg.
func handshake(t *testing.T, addr string, cfg wire.ClientConfig) error {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if cfg.Name == "" {
		cfg.Name = "e2e"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := wire.ClientHandshake(ctx, nc, cfg)
	if err == nil {
		conn.NetConn.Close()
	}
	return err
}

// wantRefused checks err is a refusal by the peer whose message holds
// every one of subs.
func wantRefused(t *testing.T, what string, err error, subs ...string) {
	t.Helper()
	var re *wire.RefusedError
	if !errors.As(err, &re) || !re.ByPeer {
		t.Errorf("%s: want a refusal from the peer, got %v", what, err)
		return
	}
	for _, s := range subs {
		if !strings.Contains(re.Message, s) {
			t.Errorf("%s: refusal %q does not name %q", what, re.Message, s)
		}
	}
	t.Logf("%s: %v", what, err)
}

// garbage sends bytes that are no frame and expects the peer to close the
// connection (after a refusal, if it sends one) without serving it.
func garbage(t *testing.T, addr string, junk []byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(junk); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	var got bytes.Buffer
	_, err = got.ReadFrom(nc)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s kept a connection open after %d bytes of garbage", addr, len(junk))
	}
}

// TestBadPeersRefused: malformed frames, an unknown protocol version, a
// wrong metaid and a wrong AUTH_CODE, at the master's two ports and a
// chunkserver's data port, and a client outside mfsexports.cfg: each is
// refused with a clear reason and changes nothing.
func TestBadPeersRefused(t *testing.T) {
	c := newCluster(t, clusterOpts{
		chunkservers: 1,
		authCode:     "s3cret",
		exports:      "127.0.0.2 / rw\n127.0.0.1 /allowed rw\n",
		noMount:      true,
	})
	ctx := testCtx(t)
	metaid := probeMetaID(t, c.masterAddr)
	before := c.changelogBytes()

	// Client outside the exports: 127.0.0.1 may only mount /allowed.
	_, err := client.Dial(ctx, c.masterAddr, client.Config{Name: "e2e", Path: "/"})
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("a client outside the exports: want EACCES naming its address, got %v", err)
	} else {
		t.Logf("outside the exports: %v", err)
	}
	mnt := filepath.Join(c.dir, "refused-mnt")
	os.Mkdir(mnt, 0o755)
	host, port, _ := net.SplitHostPort(c.masterAddr)
	m := startProc(t, "mfsmount", mnt, "-f", "-H", host, "-P", port)
	select {
	case <-m.done:
		if m.err == nil || !strings.Contains(m.log.String(), "127.0.0.1") {
			t.Errorf("mfsmount outside the exports: exit %v, output:\n%s", m.err, m.log)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("mfsmount outside the exports still runs after 30 s")
	}
	if isMounted(mnt) {
		t.Errorf("%s got mounted for a client outside the exports", mnt)
	}

	cs := c.cs[0].data
	for _, port := range []struct{ name, addr string }{{"client port", c.masterAddr}, {"chunkserver port", c.csAddr}, {"data port", cs}} {
		// Malformed frames: random bytes, a frame header claiming 1 GiB,
		// a valid length with a bad checksum.
		garbage(t, port.addr, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		garbage(t, port.addr, []byte{0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
		garbage(t, port.addr, bytes.Repeat([]byte{0xA5}, 4096))

		// A protocol version this build does not know.
		err := handshake(t, port.addr, wire.ClientConfig{Role: wire.RoleClient, MinVersion: 99, MaxVersion: 99})
		if port.name == "chunkserver port" {
			err = handshake(t, port.addr, wire.ClientConfig{Role: wire.RoleChunkserver, MinVersion: 99, MaxVersion: 99, AuthCode: []byte("s3cret")})
		}
		wantRefused(t, port.name+": unknown version", err, "99", strconv.Itoa(int(wire.ProtocolVersion)))

		// Another file system.
		role := wire.RoleClient
		if port.name == "chunkserver port" {
			role = wire.RoleChunkserver
		}
		err = handshake(t, port.addr, wire.ClientConfig{Role: role, MetaID: metaid ^ 0x5A5A, AuthCode: []byte("s3cret")})
		wantRefused(t, port.name+": wrong metaid", err)
	}
	// A chunkserver with the wrong AUTH_CODE, at the master and at another
	// chunkserver's data port.
	for _, addr := range []string{c.csAddr, cs} {
		err := handshake(t, addr, wire.ClientConfig{Role: wire.RoleChunkserver, AuthCode: []byte("wrong")})
		if err == nil || !errors.Is(err, wire.ErrRefused) && !strings.Contains(err.Error(), "AUTH") && !strings.Contains(strings.ToLower(err.Error()), "auth") {
			t.Errorf("%s: wrong AUTH_CODE: want a refusal, got %v", addr, err)
		} else {
			t.Logf("%s: wrong AUTH_CODE: %v", addr, err)
		}
	}
	// And a real chunkserver process with the wrong code never registers.
	c.authCode = "wrong"
	bad := c.startChunkserver(9, "")
	time.Sleep(3 * time.Second)
	if l := lineWith(c.master.log, "chunkserver registered", bad.data); l != "" {
		t.Errorf("a chunkserver with the wrong AUTH_CODE registered: %s", l)
	}
	bad.kill()

	// Nothing changed: the changelog is as it was, and the master serves.
	if after := c.changelogBytes(); !bytes.Equal(before, after) {
		t.Errorf("the refused peers changed the metadata: changelog grew from %d to %d bytes", len(before), len(after))
	}
	if !c.master.running() || !c.cs[0].running() {
		t.Fatalf("a daemon died of bad input")
	}
	if probeMetaID(t, c.masterAddr) != metaid {
		t.Errorf("metaid changed")
	}
}

// probeMetaID learns the master's metaid from a handshake.
func probeMetaID(t *testing.T, addr string) uint64 {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{Role: wire.RoleClient, Name: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	return conn.MetaID
}

// lineWith returns the first line of l holding every one of subs.
func lineWith(l *logBuf, subs ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, x := range l.lines {
		for _, s := range subs {
			if !strings.Contains(x, s) {
				continue next
			}
		}
		return x
	}
	return ""
}
