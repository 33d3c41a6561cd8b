package metalogger_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metalogger"
	"github.com/carpfs/carpfs/internal/wire"
)

// logCapture keeps a daemon's log lines for a test to search.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// waitLine waits until a logged line holds every one of subs.
func (l *logCapture) waitLine(t *testing.T, subs ...string) string {
	t.Helper()
	var found string
	eventuallyQ(t, 10*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
	next:
		for _, line := range strings.Split(l.buf.String(), "\n") {
			for _, s := range subs {
				if !strings.Contains(line, s) {
					continue next
				}
			}
			found = line
			return nil
		}
		return &missingLine{subs, l.buf.String()}
	})
	return found
}

type missingLine struct {
	subs []string
	log  string
}

func (m *missingLine) Error() string {
	return "no log line with " + strings.Join(m.subs, " and ") + " in:\n" + m.log
}

// stored is what a metalogger's status says it holds.
func stored(t *testing.T, dir string) metalogger.Status {
	t.Helper()
	st, err := metalogger.StatusOffline(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRefusals: a metalogger of another file system, one with the wrong
// AUTH_CODE, and a stream frame or changelog line that is corrupt are
// refused with an error that says why, and nothing is written.
func TestRefusals(t *testing.T) {
	base := t.TempDir()
	// A metalogger of file system A.
	a, started := startMaster(t, filepath.Join(base, "a"), "", 1, master.JournalConfig{})
	mlA := startML(t, filepath.Join(base, "mlA"), a.addr)
	a.wait(started, 20*time.Second)
	if err := create(context.Background(), a.store, "x"); err != nil {
		t.Fatal(err)
	}
	a.stop()
	mlA.stop()
	before := stored(t, filepath.Join(base, "mlA"))

	t.Run("other file system", func(t *testing.T) {
		b, started := startMaster(t, filepath.Join(base, "b"), "", 1, master.JournalConfig{})
		var lc logCapture
		q := startMLWith(t, metalogger.Config{Master: b.addr, Dir: filepath.Join(base, "mlA"), Logger: lc.logger()})
		line := lc.waitLine(t, "master link down", "metaid")
		t.Logf("refused: %s", line)
		select {
		case <-started:
			t.Fatal("a master started with a metalogger of another file system")
		case <-time.After(500 * time.Millisecond):
		}
		q.stop()
		if after := stored(t, filepath.Join(base, "mlA")); after.Version != before.Version || after.Term != before.Term || after.MetaID != before.MetaID {
			t.Fatalf("the metalogger changed: %+v, was %+v", after, before)
		}
	})

	t.Run("wrong AUTH_CODE", func(t *testing.T) {
		c, started := startMaster(t, filepath.Join(base, "c"), "", 1, master.JournalConfig{AuthCode: []byte("right")})
		var lc logCapture
		dir := filepath.Join(base, "mlC")
		q := startMLWith(t, metalogger.Config{Master: c.addr, Dir: dir, AuthCode: []byte("wrong"), Logger: lc.logger()})
		line := lc.waitLine(t, "master link down", "AUTH_CODE")
		t.Logf("refused: %s", line)
		select {
		case <-started:
			t.Fatal("a master started with a metalogger that has the wrong AUTH_CODE")
		case <-time.After(500 * time.Millisecond):
		}
		q.stop()
		if st := stored(t, dir); st.Version != 0 || st.Term != 0 || st.MetaID != "0000000000000000" {
			t.Fatalf("the metalogger stored something: %+v", st)
		}
	})

	t.Run("corrupt stream", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			corrupt func(*wire.Conn) error
			want    string
		}{
			{"frame CRC", func(c *wire.Conn) error {
				var buf bytes.Buffer
				fw := wire.NewFrameWriter(&buf, 0)
				if err := fw.Send(0, 0, &wire.MLAppend{Term: 1, Commit: 0, Lines: []byte(goodLine)}); err != nil {
					return err
				}
				b := buf.Bytes()
				b[len(b)-8] ^= 0x40 // a payload byte: the frame's CRC no longer matches
				_, err := c.NetConn.Write(b)
				return err
			}, "master link down"},
			{"changelog line", func(c *wire.Conn) error {
				bad := strings.Replace(goodLine, ",x,", ",y,", 1) // the line's checksum no longer matches
				return c.W.Send(0, 0, &wire.MLAppend{Term: 1, Commit: 0, Lines: []byte(bad)})
			}, "stream from the master refused"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				var lc logCapture
				dir := filepath.Join(t.TempDir(), "ml")
				q := startMLWith(t, metalogger.Config{Master: ln.Addr().String(), Dir: dir, Logger: lc.logger()})
				nc, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				ctx := context.Background()
				conn, err := wire.ServerHandshake(ctx, nc, wire.ServerConfig{
					Role: wire.RoleMaster, Name: "fake", MetaID: 0x1234, Term: 1, Serve: wire.Roles(wire.RoleMetalogger),
				})
				if err != nil {
					t.Fatal(err)
				}
				mux := wire.NewMux(conn, wire.MuxConfig{})
				var st wire.MLState
				if err := mux.CallInto(ctx, &wire.MLGrant{Term: 1, Holder: "fake"}, &st); err != nil {
					t.Fatal(err)
				}
				if err := tc.corrupt(conn); err != nil {
					t.Fatal(err)
				}
				line := lc.waitLine(t, tc.want)
				t.Logf("refused: %s", line)
				select {
				case <-mux.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the metalogger kept the connection after a corrupt stream")
				}
				q.stop()
				if st := stored(t, dir); st.Version != 0 {
					t.Fatalf("the metalogger stored something from a corrupt stream: %+v", st)
				}
			})
		}
	})
}

// goodLine is a valid changelog line: version 1, term 1, a create of x.
var goodLine = func() string {
	b, err := changelog.AppendEntry(nil, &meta.Entry{
		Version: 1, Term: 1, Time: 1700000000,
		Op:     &meta.Create{Parent: meta.RootInode, Name: "x", Type: meta.TypeFile, Mode: 0o644},
		Result: meta.Result{N: 1, Val: [2]uint64{2}},
	})
	if err != nil {
		panic(err)
	}
	return string(b)
}()
