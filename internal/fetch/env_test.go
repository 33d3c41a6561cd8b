package fetch

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The tests run a real OpenSSH server on 127.0.0.1 and the real
// mfsmetalogger binary through it. Both are shared by the package's tests
// and set up on first use: env starts them, TestMain stops sshd by its PID.

const sshdPath = "/usr/sbin/sshd"

type testEnv struct {
	dir        string // holds the keys, sshd_config and the binary
	addr       string
	user       string
	hostKey    ssh.PublicKey // ed25519
	hostECDSA  ssh.PublicKey // the server's second host key
	keyFile    string        // the client's private key
	knownHosts string        // holds hostKey for addr
	binary     string        // mfsmetalogger
	sshd       *exec.Cmd
	sshdErr    *syncBuffer
}

var (
	envOnce sync.Once
	theEnv  *testEnv
	envErr  error
	envSkip string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theEnv != nil {
		theEnv.stop()
	}
	os.Exit(code)
}

// env returns the shared sshd and binary, or skips the test when it
// cannot run here: not as root or without sshd, outside CI. In CI (CI set)
// every part is installed, so a missing one fails.
func env(t *testing.T) *testEnv {
	t.Helper()
	envOnce.Do(func() {
		switch _, err := os.Stat(sshdPath); {
		case os.Geteuid() != 0:
			envSkip = "these tests start sshd, which needs root"
		case err != nil:
			envSkip = "these tests need OpenSSH's server: " + err.Error()
		}
		if envSkip != "" {
			return
		}
		theEnv, envErr = startEnv()
	})
	if envSkip != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("in CI every part must be installed: %s", envSkip)
		}
		t.Skip(envSkip)
	}
	if envErr != nil {
		t.Fatal(envErr)
	}
	return theEnv
}

func startEnv() (*testEnv, error) {
	dir, err := os.MkdirTemp("", "fetch-test-")
	if err != nil {
		return nil, err
	}
	e := &testEnv{dir: dir}
	fail := func(err error) (*testEnv, error) {
		e.stop()
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return fail(err)
	}
	e.user = u.Username
	e.binary = filepath.Join(dir, "mfsmetalogger")
	if out, err := exec.Command("go", "build", "-o", e.binary, "github.com/carpfs/carpfs/metalogger").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("build mfsmetalogger: %v\n%s", err, out))
	}
	if e.hostKey, err = writeKey(filepath.Join(dir, "host_ed25519"), "ed25519"); err != nil {
		return fail(err)
	}
	if e.hostECDSA, err = writeKey(filepath.Join(dir, "host_ecdsa"), "ecdsa"); err != nil {
		return fail(err)
	}
	clientPub, err := writeKey(filepath.Join(dir, "id_ed25519"), "ed25519")
	if err != nil {
		return fail(err)
	}
	e.keyFile = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		return fail(err)
	}
	// Debian's sshd wants its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return fail(err)
	}
	for try := 0; ; try++ {
		err := e.startSSHD()
		if err == nil {
			break
		}
		if try == 4 || !strings.Contains(err.Error(), "in use") {
			return fail(err)
		}
	}
	e.knownHosts = e.writeKnownHosts(filepath.Join(dir, "known_hosts"), e.hostKey)
	return e, nil
}

// writeKey makes a key of type kind, "ed25519" or "ecdsa" (P-256),
// writes its private half in OpenSSH format and returns the public half.
func writeKey(path, kind string) (ssh.PublicKey, error) {
	var priv crypto.Signer
	var err error
	if kind == "ecdsa" {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(priv.Public())
}

// startSSHD runs sshd on a free port and waits until it accepts.
func (e *testEnv) startSSHD() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	e.addr = ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(e.addr)
	cfg := filepath.Join(e.dir, "sshd_config")
	conf := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
HostKey %s
PidFile none
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers %s
Subsystem sftp internal-sftp
MaxStartups 100
MaxSessions 100
LogLevel INFO
`, port, filepath.Join(e.dir, "host_ed25519"), filepath.Join(e.dir, "host_ecdsa"), filepath.Join(e.dir, "authorized_keys"), e.user)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	e.sshdErr = &syncBuffer{}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfg)
	cmd.Stdout, cmd.Stderr = e.sshdErr, e.sshdErr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited (%v): %s", err, e.sshdErr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if c, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
			c.Close()
			e.sshd = cmd
			return nil
		}
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("sshd did not listen on %s within 5s: %s", e.addr, e.sshdErr.String())
}

// stop kills sshd by its PID and removes the files.
func (e *testEnv) stop() {
	if e.sshd != nil {
		_ = e.sshd.Process.Kill()
		// Wait runs in startSSHD's goroutine; the kill is enough here.
	}
	os.RemoveAll(e.dir)
}

func (e *testEnv) writeKnownHosts(path string, keys ...ssh.PublicKey) string {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(knownhosts.Line([]string{knownhosts.Normalize(e.addr)}, k) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		panic(err)
	}
	return path
}

// host describes the test server as a metalogger holding dataPath.
func (e *testEnv) host(dataPath string) Host {
	return Host{Name: "ml1", Addr: e.addr, User: e.user, KeyFile: e.keyFile, KnownHosts: e.knownHosts,
		DataPath: dataPath, Command: e.binary}
}

// dial connects to h, closing the connection when the test ends.
func dial(t *testing.T, h Host) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), h, 20*time.Second, WithLogger(testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testLog sends events to the test's log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// syncBuffer collects sshd's output from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// errorsIs fails the test unless err matches every target.
func errorsIs(t *testing.T, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("error %v: does not match %v", err, target)
		}
	}
}
