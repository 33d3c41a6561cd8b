// Package client is the mount's side of the master's client link: a
// session with the master and one method per metadata operation, each a
// single round trip (see docs/PROTOCOL.md, "Client and master").
//
// A Client is safe for concurrent use; calls are pipelined on one
// connection. Every call takes the credentials of the process that made
// the system call, which own what it creates (after the export's
// maproot/mapall). A failed operation returns an error that matches its
// errno with errors.Is (syscall.ENOENT, syscall.EROFS, ...), ready for
// the kernel. Reconnecting is the caller's job for now: Dial again with
// Config.SessionID set to resume the session within the master's grace
// period.
package client

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/carpfs/carpfs/internal/wire"
)

// Cred is the uid and gid a request runs as.
type Cred struct {
	UID, GID uint32
}

// Config configures a session.
type Config struct {
	Name     string // this host, for the master's logs
	Path     string // directory to mount; "" means "/"
	Password string // the export's password=, if it has one
	Info     string // free text for the master's session list
	// SessionID resumes a session after a lost connection; 0 opens a new
	// one.
	SessionID uint64
	// Seq is, when resuming, the old Client's Seq: request numbers go on
	// from there, because the master answers a number it has seen with
	// that request's first answer.
	Seq      uint64
	MetaID   uint64 // file system expected; 0 learns it
	Term     uint64 // highest master term seen
	AuthCode []byte // only if the master demands it of clients
	// Dirs, if set, is given the attributes of directories a mutation
	// changed, as the master read them just after it (protocol 2's
	// Changed reply), before the call returns.
	Dirs func(dirs []wire.Attr)
}

// Client is a session with the master.
type Client struct {
	mux      *wire.Mux
	session  uint64
	readOnly bool
	root     wire.Attr
	seq      atomic.Uint64
	dirs     func([]wire.Attr)
}

// Dial connects to the master at addr and opens the session.
func Dial(ctx context.Context, addr string, cfg Config) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial master: %w", err)
	}
	c, err := New(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// New runs the handshake on nc and opens the session. On error the
// caller closes nc.
func New(ctx context.Context, nc net.Conn, cfg Config) (*Client, error) {
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{
		Role: wire.RoleClient, Name: cfg.Name, MetaID: cfg.MetaID, Term: cfg.Term,
		AuthCode: cfg.AuthCode, PeerRole: wire.RoleMaster,
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{mux: wire.NewMux(conn, wire.MuxConfig{}), dirs: cfg.Dirs}
	c.seq.Store(cfg.Seq)
	if err := c.open(ctx, cfg); err != nil {
		c.mux.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) open(ctx context.Context, cfg Config) error {
	p := cfg.Path
	if p == "" {
		p = "/"
	}
	req := &wire.SessionOpen{SessionID: cfg.SessionID, Path: p, Info: cfg.Info}
	if cfg.Password != "" {
		var n wire.SessionNonce
		if err := c.mux.CallInto(ctx, &wire.SessionChallenge{}, &n); err != nil {
			return fmt.Errorf("client: open session: %w", err)
		}
		req.Proof = wire.SessionProof(cfg.Password, n.Nonce, p, cfg.SessionID)
	}
	var r wire.SessionOpened
	if err := c.mux.CallInto(ctx, req, &r); err != nil {
		return fmt.Errorf("client: open session: %w", err)
	}
	c.session, c.readOnly, c.root = r.SessionID, r.ReadOnly, r.Root
	return nil
}

// Session is the session id, for resuming it.
func (c *Client) Session() uint64 { return c.session }

// Seq is the last request sequence number used, for Config.Seq when
// resuming the session.
func (c *Client) Seq() uint64 { return c.seq.Load() }

// ReadOnly says whether the export is read-only.
func (c *Client) ReadOnly() bool { return c.readOnly }

// RootAttr is the mounted directory's attributes when the session opened.
func (c *Client) RootAttr() wire.Attr { return c.root }

// Conn is the wire session, for the master's metaid and term.
func (c *Client) Conn() *wire.Conn { return c.mux.Conn() }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.mux.Done() }

// Close ends the session (umount): the master releases its open files
// at once. The connection is closed even if the goodbye fails.
func (c *Client) Close(ctx context.Context) error {
	var ok wire.Ok
	err := c.mux.CallInto(ctx, &wire.SessionEnd{SessionID: c.session}, &ok)
	c.mux.Close()
	if err != nil {
		return fmt.Errorf("client: end session: %w", err)
	}
	return nil
}

// Drop closes the connection without ending the session, as a crash or
// a network failure would; the session can be resumed within the
// master's grace period.
func (c *Client) Drop() { c.mux.Close() }

func (c *Client) hdr(cr Cred) wire.ReqHeader {
	return wire.ReqHeader{Session: c.session, Seq: c.seq.Add(1), UID: cr.UID, GID: cr.GID}
}

// entry calls req and returns the attributes in its Entry (or Changed)
// reply.
func (c *Client) entry(ctx context.Context, req wire.Message) (wire.Attr, error) {
	f, err := c.mux.Call(ctx, req)
	if err != nil {
		return wire.Attr{}, err
	}
	if f.Type == wire.TypeChanged {
		return c.changed(req, f)
	}
	var e wire.Entry
	if err := c.unmarshal(req, f, &e); err != nil {
		return wire.Attr{}, err
	}
	return e.Attr, nil
}

// ok calls req, whose reply is Ok (or Changed).
func (c *Client) ok(ctx context.Context, req wire.Message) error {
	f, err := c.mux.Call(ctx, req)
	if err != nil {
		return err
	}
	if f.Type == wire.TypeChanged {
		_, err := c.changed(req, f)
		return err
	}
	return c.unmarshal(req, f, &wire.Ok{})
}

// changed decodes a Changed reply, hands its directories to Config.Dirs
// and returns the inode's attributes.
func (c *Client) changed(req wire.Message, f wire.Frame) (wire.Attr, error) {
	var ch wire.Changed
	if err := wire.Unmarshal(f.Payload, &ch); err != nil {
		return wire.Attr{}, fmt.Errorf("client: %s: %w", req.Type(), err)
	}
	if c.dirs != nil && len(ch.Dirs) > 0 {
		c.dirs(ch.Dirs)
	}
	return ch.Attr, nil
}

// unmarshal decodes reply f to req into resp, which names the type
// expected.
func (c *Client) unmarshal(req wire.Message, f wire.Frame, resp wire.Message) error {
	if f.Type != resp.Type() {
		return fmt.Errorf("wire: call %s: %w: reply is %s, want %s", req.Type(), wire.ErrMessage, f.Type, resp.Type())
	}
	return wire.Unmarshal(f.Payload, resp)
}
