package fetch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// DefaultTimeout bounds Dial, Fence and Status when Dial is given 0.
const DefaultTimeout = 10 * time.Second

// Host key refusals; a *HostKeyError matches ErrHostKey and one of the
// other two.
var (
	ErrHostKey        = errors.New("host key refused")
	ErrUnknownHost    = errors.New("host not in known_hosts")
	ErrHostKeyChanged = errors.New("host key does not match known_hosts")
)

// HostKeyError says why a host's key was refused.
type HostKeyError struct {
	Host       string // Host.Name
	Addr       string
	KnownHosts string
	Offered    string // type and SHA256 fingerprint of the key the host offered
	// Known lists the keys known_hosts holds for the address, as
	// "file:line type fingerprint"; empty when the host is unknown.
	Known   []string
	Revoked bool // the offered key is marked @revoked
}

func (e *HostKeyError) Error() string {
	switch {
	case e.Revoked:
		return fmt.Sprintf("metalogger %s (%s) offered host key %s, which %s marks @revoked: refusing it", e.Host, e.Addr, e.Offered, e.KnownHosts)
	case len(e.Known) == 0:
		return fmt.Sprintf("metalogger %s (%s) is not in %s: it offered host key %s; check that fingerprint on the host (ssh-keygen -lf) and add the key to %s; refusing it until then",
			e.Host, e.Addr, e.KnownHosts, e.Offered, e.KnownHosts)
	}
	return fmt.Sprintf("metalogger %s (%s) offered host key %s, but %s holds another key for it (%s): the host was reinstalled or someone is in the middle; refusing it",
		e.Host, e.Addr, e.Offered, e.KnownHosts, strings.Join(e.Known, "; "))
}

// Is makes a HostKeyError match ErrHostKey and ErrUnknownHost or
// ErrHostKeyChanged.
func (e *HostKeyError) Is(target error) bool {
	switch target {
	case ErrHostKey:
		return true
	case ErrUnknownHost:
		return len(e.Known) == 0 && !e.Revoked
	case ErrHostKeyChanged:
		return len(e.Known) > 0 || e.Revoked
	}
	return false
}

// Conn is an SSH connection to one metalogger host. Its methods may be
// called from several goroutines.
type Conn struct {
	h       Host
	log     *slog.Logger
	timeout time.Duration
	client  *ssh.Client
	chunk   int // bytes asked for per read when copying
}

// defaultChunk is read per ReadAt: the SFTP client splits it into 64
// concurrent 32 KiB requests, so a copy keeps the link busy.
const defaultChunk = 2 << 20

// Option tunes Dial.
type Option func(*options)

type options struct {
	log *slog.Logger
}

// WithLogger sends the connection's events (connected, fenced, fetched)
// to log; without it, or with nil, they are discarded.
func WithLogger(log *slog.Logger) Option {
	return func(o *options) { o.log = log }
}

// Dial connects to h and logs in. timeout (0: DefaultTimeout) bounds the
// connection and handshake, and later each Fence and Status; ctx bounds
// all of it too. A host key known_hosts does not hold is a *HostKeyError.
func Dial(ctx context.Context, h Host, timeout time.Duration, opts ...Option) (*Conn, error) {
	h = h.WithDefaults()
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("metalogger", h.Name, "addr", h.Addr)
	signer, err := loadKey(h.KeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("dial metalogger %s: %w", h.Name, err)
	}
	check, err := knownhosts.New(h.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("dial metalogger %s: known_hosts: %w", h.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", h.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial metalogger %s: %w", h.Name, err)
	}
	// The handshake has no ctx of its own: a deadline bounds it, and
	// cancelling ctx moves the deadline to now.
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	var keyErr error
	cfg := &ssh.ClientConfig{
		User: h.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			keyErr = hostKeyError(h, check(hostname, remote, key), key)
			return keyErr
		},
		HostKeyAlgorithms: knownAlgorithms(check, h.Addr, nc.RemoteAddr()),
		Timeout:           timeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, h.Addr, cfg)
	stopped := stop() // false: ctx ended and the deadline was moved
	switch {
	case keyErr != nil:
		nc.Close()
		return nil, keyErr
	case err == nil && !stopped:
		sc.Close()
	case err != nil:
		nc.Close()
	}
	if err != nil || !stopped {
		if !stopped || ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection's deadline is ctx's and may pass first.
			cause := context.Cause(ctx)
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			return nil, fmt.Errorf("dial metalogger %s: SSH handshake with %s not done (timeout %s): %w", h.Name, h.Addr, timeout, cause)
		}
		return nil, fmt.Errorf("dial metalogger %s at %s as %s: %w", h.Name, h.Addr, h.User, err)
	}
	_ = nc.SetDeadline(time.Time{})
	log.Debug("connected")
	return &Conn{h: h, log: log, timeout: timeout, client: ssh.NewClient(sc, chans, reqs), chunk: defaultChunk}, nil
}

// hostKeyError turns knownhosts' verdict into a *HostKeyError.
func hostKeyError(h Host, err error, key ssh.PublicKey) error {
	if err == nil {
		return nil
	}
	e := &HostKeyError{Host: h.Name, Addr: h.Addr, KnownHosts: h.KnownHosts, Offered: describeKey(key)}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke):
		for _, k := range ke.Want {
			e.Known = append(e.Known, fmt.Sprintf("%s:%d %s", k.Filename, k.Line, describeKey(k.Key)))
		}
	case errors.As(err, &re):
		e.Revoked = true
	default:
		return fmt.Errorf("metalogger %s (%s): checking the host key against %s: %w", h.Name, h.Addr, h.KnownHosts, err)
	}
	return e
}

func describeKey(k ssh.PublicKey) string {
	return k.Type() + " " + ssh.FingerprintSHA256(k)
}

// knownAlgorithms asks for the host key types known_hosts holds for addr,
// so that a host with several keys offers one of those and not, say, an
// RSA key when only its ed25519 key is known, which would read as a
// changed key. Nil (any algorithm) for an unknown host.
func knownAlgorithms(check ssh.HostKeyCallback, addr string, remote net.Addr) []string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(check(addr, remote, probe), &ke) {
		return nil
	}
	var algs []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		t := k.Key.Type()
		types := []string{t}
		if t == ssh.KeyAlgoRSA {
			types = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, a := range types {
			if !seen[a] {
				seen[a] = true
				algs = append(algs, a)
			}
		}
	}
	return algs
}

// loadKey reads an unencrypted private key.
func loadKey(path string, log *slog.Logger) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("SSH key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	var pass *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pass):
		return nil, fmt.Errorf("SSH key %s is encrypted: carpwatch runs unattended and needs a key without a passphrase, readable only by its user", path)
	case err != nil:
		return nil, fmt.Errorf("SSH key %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("SSH key file is readable by others", "file", path, "mode", fi.Mode().Perm())
	}
	return signer, nil
}

// Host is the host c is connected to, with defaults filled in.
func (c *Conn) Host() Host { return c.h }

// Close ends the connection.
func (c *Conn) Close() error { return c.client.Close() }
