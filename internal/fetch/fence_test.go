package fetch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/carpfs/carpfs/internal/metalogger"
)

// TestFence fences an offline metalogger through sshd and the real
// mfsmetalogger: the term rises and the JSON comes back; an older term,
// or the same term for another holder, is refused with the state kept.
func TestFence(t *testing.T) {
	e := env(t)
	dir := filepath.Join(t.TempDir(), "ml")
	h := newHistory(t, 120)
	h.writeML(t, dir, layout{dump: 50, from: 1, to: 120})
	c := dial(t, e.host(dir))
	ctx := context.Background()

	// The holder goes through the remote shell: quoting must keep it whole.
	holder := `carp 'two' "$HOME" ;x`
	st, err := c.Fence(ctx, 5, holder)
	if err != nil {
		t.Fatal(err)
	}
	want := metalogger.Status{ID: "ml1-0001", MetaID: "00000000000fe7c4", Term: 5, Holder: holder,
		Version: 120, LastTerm: 2, First: 1, Committed: 120, Replica: 120, Dump: 50}
	if st != want {
		t.Fatalf("fence answered\n%+v\nwant\n%+v", st, want)
	}

	for _, tc := range []struct {
		term   uint64
		holder string
	}{{4, holder}, {5, "another"}} {
		st, err = c.Fence(ctx, tc.term, tc.holder)
		errorsIs(t, err, ErrRefused)
		if st.Term != 5 || st.Holder != holder {
			t.Fatalf("refused fence (%d, %q) returned %+v, want the term kept", tc.term, tc.holder, st)
		}
		if !strings.Contains(err.Error(), `holds term 5 for "carp`) {
			t.Fatalf("refusal does not say what is held: %v", err)
		}
	}

	if st, err = c.Status(ctx); err != nil || st != want {
		t.Fatalf("status %+v, %v; want %+v", st, err, want)
	}
	// The same fence again is accepted: carpwatch may retry.
	if _, err := c.Fence(ctx, 5, holder); err != nil {
		t.Fatal(err)
	}
	if st, err = c.Fence(ctx, 6, ""); err != nil || st.Term != 6 || st.Holder != "" {
		t.Fatalf("fence 6 with no holder: %+v, %v", st, err)
	}
}

// TestHostKeyRefused: a host whose key known_hosts does not hold is
// refused before anything runs, with an error naming the host, the
// address and both keys.
func TestHostKeyRefused(t *testing.T) {
	e := env(t)
	dir := filepath.Join(t.TempDir(), "ml")
	newHistory(t, 10).writeML(t, dir, layout{from: 1, to: 10})
	other, err := writeKey(filepath.Join(t.TempDir(), "other"), "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	offered := ssh.FingerprintSHA256(e.hostKey)

	t.Run("changed", func(t *testing.T) {
		h := e.host(dir)
		h.KnownHosts = e.writeKnownHosts(filepath.Join(t.TempDir(), "known_hosts"), other)
		c, err := Dial(context.Background(), h, 20*time.Second, WithLogger(testLog(t)))
		if c != nil {
			c.Close()
			t.Fatal("Dial returned a connection")
		}
		errorsIs(t, err, ErrHostKey, ErrHostKeyChanged)
		if errors.Is(err, ErrUnknownHost) {
			t.Fatalf("a changed key reads as an unknown host: %v", err)
		}
		msg := err.Error()
		for _, s := range []string{"ml1", e.addr, offered, ssh.FingerprintSHA256(other), h.KnownHosts + ":1", "another key"} {
			if !strings.Contains(msg, s) {
				t.Errorf("error does not say %q: %s", s, msg)
			}
		}
	})

	t.Run("unknown", func(t *testing.T) {
		h := e.host(dir)
		// known_hosts knows the key, but for another port of the host.
		elsewhere := &testEnv{addr: "127.0.0.1:1"}
		h.KnownHosts = elsewhere.writeKnownHosts(filepath.Join(t.TempDir(), "known_hosts"), e.hostKey)
		_, err := Dial(context.Background(), h, 20*time.Second, WithLogger(testLog(t)))
		errorsIs(t, err, ErrHostKey, ErrUnknownHost)
		msg := err.Error()
		for _, s := range []string{"ml1", e.addr, "is not in " + h.KnownHosts} {
			if !strings.Contains(msg, s) {
				t.Errorf("error does not say %q: %s", s, msg)
			}
		}
		// Knowing nothing of the host, the client takes any of its keys.
		if !strings.Contains(msg, offered) && !strings.Contains(msg, ssh.FingerprintSHA256(e.hostECDSA)) {
			t.Errorf("error does not give the offered key's fingerprint: %s", msg)
		}
	})

	t.Run("no known_hosts", func(t *testing.T) {
		h := e.host(dir)
		h.KnownHosts = filepath.Join(t.TempDir(), "missing")
		if _, err := Dial(context.Background(), h, 20*time.Second); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Dial with no known_hosts file: %v", err)
		}
	})

	// Nothing ran: the term is the one writeML saved.
	st, err := metalogger.StatusOffline(dir)
	if err != nil || st.Term != 2 || st.Holder != "old" {
		t.Fatalf("state after refused dials: %+v, %v", st, err)
	}
	// The right known_hosts still works, with another key also known; and
	// with only the host's second key known, the host is asked for that
	// one rather than the ed25519 key a client prefers.
	for _, keys := range [][]ssh.PublicKey{{other, e.hostKey}, {e.hostECDSA}} {
		h := e.host(dir)
		h.KnownHosts = e.writeKnownHosts(filepath.Join(t.TempDir(), "known_hosts"), keys...)
		if _, err := dial(t, h).Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCommandErrors: a missing command, an answer that is not a status,
// a command that hangs and a host that does not answer give clear
// errors, within the timeout.
func TestCommandErrors(t *testing.T) {
	e := env(t)
	bin := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(bin, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := context.Background()
	run := func(t *testing.T, command string, timeout time.Duration) (metalogger.Status, error) {
		h := e.host(t.TempDir())
		h.Command = command
		c, err := Dial(ctx, h, 20*time.Second, WithLogger(testLog(t)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.timeout = timeout // the command's bound, not the dial's
		return c.Fence(ctx, 3, "m")
	}

	t.Run("missing", func(t *testing.T) {
		_, err := run(t, filepath.Join(bin, "no such dir", "mfsmetalogger"), 20*time.Second)
		errorsIs(t, err, ErrNoCommand)
		if !strings.Contains(err.Error(), "no such dir/mfsmetalogger") {
			t.Fatalf("error does not name the command: %v", err)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		_, err := run(t, script("chatty", `echo "Welcome to $(hostname)"; echo '{"id":"x"}'`), 20*time.Second)
		errorsIs(t, err, ErrBadAnswer)
		if !strings.Contains(err.Error(), "Welcome") {
			t.Fatalf("error does not show the answer: %v", err)
		}
	})
	t.Run("fails", func(t *testing.T) {
		_, err := run(t, script("broken", `echo "disk on fire" >&2; exit 3`), 20*time.Second)
		if err == nil || !strings.Contains(err.Error(), "exit status 3: disk on fire") {
			t.Fatalf("error %v does not give the exit status and stderr", err)
		}
	})
	t.Run("hangs", func(t *testing.T) {
		t0 := time.Now()
		_, err := run(t, script("hang", "exec sleep 30"), 500*time.Millisecond)
		errorsIs(t, err, context.DeadlineExceeded)
		if d := time.Since(t0); d > 10*time.Second {
			t.Fatalf("a hanging command took %s to give up", d)
		}
	})
	t.Run("says yes to another term", func(t *testing.T) {
		_, err := run(t, script("liar", `echo '{"id":"x","term":2,"holder":"m"}'`), 20*time.Second)
		errorsIs(t, err, ErrBadAnswer)
	})
	t.Run("no server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // accepts nothing: the handshake never starts
		h := e.host(t.TempDir())
		h.Addr = ln.Addr().String()
		t0 := time.Now()
		_, err = Dial(ctx, h, 300*time.Millisecond)
		errorsIs(t, err, context.DeadlineExceeded)
		if d := time.Since(t0); d > 10*time.Second {
			t.Fatalf("Dial took %s to give up", d)
		}
	})
}

func TestParseStatus(t *testing.T) {
	good := `{"id":"a","metaid":"0000000000000001","term":3,"holder":"h","version":9,"last_term":2,"future_field":1}` + "\n"
	st, err := parseStatus([]byte(good))
	if err != nil || st.ID != "a" || st.Term != 3 || st.Version != 9 || st.LastTerm != 2 {
		t.Fatalf("parseStatus(good) = %+v, %v", st, err)
	}
	for _, bad := range []string{"", "\n", "{}\n", good + good, strings.TrimSuffix(good, "\n"), "motd\n" + good, "[1]\n"} {
		if _, err := parseStatus([]byte(bad)); !errors.Is(err, ErrBadAnswer) {
			t.Errorf("parseStatus(%q) = %v, want ErrBadAnswer", bad, err)
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"/opt/mfs bin/mfsmetalogger", "--holder=it's", "$x`y`"})
	want := `'/opt/mfs bin/mfsmetalogger' '--holder=it'\''s' '$x` + "`y`'"
	if got != want {
		t.Fatalf("shellJoin = %s, want %s", got, want)
	}
}

func TestHostDefaults(t *testing.T) {
	h := Host{Name: "ml-1.a", Addr: "fe80::1", User: "root", KeyFile: "k", KnownHosts: "kh"}.WithDefaults()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if h.Addr != "[fe80::1]:22" || h.Command != DefaultCommand || h.DataPath != DefaultDataPath {
		t.Fatalf("defaults: %+v", h)
	}
	for _, bad := range []Host{
		{Name: "a/b", Addr: "x:22", User: "u", KeyFile: "k", KnownHosts: "kh", DataPath: "/d", Command: "c"},
		{Name: "a", Addr: "x:22", User: "u", KeyFile: "k", DataPath: "/d", Command: "c"},
		{Name: "a", Addr: "x:22", User: "u", KeyFile: "k", KnownHosts: "kh", DataPath: "rel", Command: "c"},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
	if got := Dir("/var/lib/mfs", "ml1"); got != "/var/lib/mfs/fetched/ml1" {
		t.Fatalf("Dir = %s", got)
	}
}

// TestLoginRefused: a key the host does not authorize, or one with a
// passphrase, is a clear error.
func TestLoginRefused(t *testing.T) {
	e := env(t)
	h := e.host(t.TempDir())
	h.KeyFile = filepath.Join(t.TempDir(), "stranger")
	if _, err := writeKey(h.KeyFile, "ed25519"); err != nil {
		t.Fatal(err)
	}
	_, err := Dial(context.Background(), h, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") || !strings.Contains(err.Error(), "as "+e.user) {
		t.Fatalf("Dial with an unknown key: %v", err)
	}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.KeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(context.Background(), h, 20*time.Second); err == nil || !strings.Contains(err.Error(), "is encrypted") {
		t.Fatalf("Dial with an encrypted key: %v", err)
	}
}
