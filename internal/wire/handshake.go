package wire

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Protocol versions this build speaks. A session runs at the highest
// version both ends speak; see docs/PROTOCOL.md for what a bump means.
const (
	ProtocolVersion    uint16 = 2
	MinProtocolVersion uint16 = 1
)

const (
	// DefaultHandshakeTimeout bounds a whole handshake.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds each write of a session (see
	// FrameWriter.SetWriteTimeout).
	DefaultWriteTimeout = 30 * time.Second
	// handshakeMaxFrame bounds frames until the peer is known: an
	// unauthenticated peer gets no more memory than this.
	handshakeMaxFrame = 64 << 10
	// maxNameLen bounds the names peers give themselves.
	maxNameLen = 255
)

// ErrRefused marks a handshake or session that one side refused; see
// RefusedError.
var ErrRefused = errors.New("refused")

// RefusedError is a refusal, sent or received. Message is the sentence
// both sides report, naming what differs (both versions, both metaids,
// both terms).
type RefusedError struct {
	Code    RefuseCode
	Message string
	// ByPeer is true when the peer refused us, false when we refused it.
	ByPeer bool
	// PeerTerm is, when this side refused a peer for having seen a newer
	// term (RefuseTerm), that term: a master not yet serving may start
	// a term above it.
	PeerTerm uint64
}

func (e *RefusedError) Error() string {
	if e.ByPeer {
		return "refused by peer (" + e.Code.String() + "): " + e.Message
	}
	return "refused peer (" + e.Code.String() + "): " + e.Message
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// ClientConfig is the dialing side's half of a handshake.
type ClientConfig struct {
	Role Role   // what this peer is; required
	Name string // host name or id, shown in the server's logs
	// MinVersion and MaxVersion are the protocol versions offered; zero
	// means MinProtocolVersion and ProtocolVersion. Tests set them to
	// play older and newer builds.
	MinVersion, MaxVersion uint16
	MetaID                 uint64 // file system this peer belongs to; 0 = learn it from the server
	Term                   uint64 // highest master term this peer has seen
	// AuthCode is the shared secret (AUTH_CODE). When set, the peer
	// insists on mutual proof: a server that does not challenge, or
	// cannot prove the secret itself, is refused, so that a rogue or
	// misconfigured master cannot command a chunkserver.
	AuthCode []byte
	// PeerRole is the role expected of the server; 0 accepts any.
	PeerRole     Role
	Timeout      time.Duration // whole handshake; 0 = DefaultHandshakeTimeout
	MaxFrameSize int           // session frame bound; 0 = DefaultMaxFrameSize
	WriteTimeout time.Duration // session write bound; 0 = DefaultWriteTimeout, <0 = none
}

// ServerConfig is the listening side's half of a handshake. Fill it per
// connection: Term in particular is the server's term at this moment.
type ServerConfig struct {
	Role                   Role // what this server is; required
	Name                   string
	MinVersion, MaxVersion uint16 // as in ClientConfig
	MetaID                 uint64 // 0 = none yet (a master before its first format)
	// Term is the server's current term. A master refuses a peer that
	// has seen a higher one: that peer knows this master was replaced.
	Term uint64
	// Serve is the roles this listener serves; 0 means every role that
	// dials (all but master).
	Serve RoleSet
	// AuthCode is the shared secret. When set, peers whose role is in
	// AuthRoles must prove it; with no AuthCode nobody is challenged.
	AuthCode []byte
	// AuthRoles defaults to chunkservers and metaloggers, as MooseFS's
	// AUTH_CODE; add clients to demand a password from mounts.
	AuthRoles    RoleSet
	Timeout      time.Duration
	MaxFrameSize int
	WriteTimeout time.Duration
}

// DefaultAuthRoles are the roles that must prove AUTH_CODE by default.
const DefaultAuthRoles = RoleSet(1<<RoleChunkserver | 1<<RoleMetalogger)

// common is what both configs share, with defaults filled in.
type common struct {
	minV, maxV   uint16
	timeout      time.Duration
	maxFrame     int
	writeTimeout time.Duration
}

func commonDefaults(minV, maxV uint16, timeout time.Duration, maxFrame int, wt time.Duration) common {
	c := common{minV, maxV, timeout, maxFrame, wt}
	if c.minV == 0 {
		c.minV = MinProtocolVersion
	}
	if c.maxV == 0 {
		c.maxV = ProtocolVersion
	}
	if c.timeout <= 0 {
		c.timeout = DefaultHandshakeTimeout
	}
	if c.maxFrame <= 0 {
		c.maxFrame = DefaultMaxFrameSize
	}
	if c.writeTimeout == 0 {
		c.writeTimeout = DefaultWriteTimeout
	}
	return c
}

func (c common) validate(role Role, name string) error {
	switch {
	case !role.valid():
		return fmt.Errorf("role %d is not a known role", role)
	case c.minV > c.maxV:
		return fmt.Errorf("version range %d-%d is empty", c.minV, c.maxV)
	case len(name) > maxNameLen:
		return fmt.Errorf("name of %d bytes is over %d", len(name), maxNameLen)
	case c.maxFrame < handshakeMaxFrame:
		return fmt.Errorf("max frame size %d is below the handshake's %d", c.maxFrame, handshakeMaxFrame)
	}
	return nil
}

// Validate reports a config that cannot work.
func (c *ClientConfig) Validate() error {
	cc := commonDefaults(c.MinVersion, c.MaxVersion, c.Timeout, c.MaxFrameSize, c.WriteTimeout)
	if err := cc.validate(c.Role, c.Name); err != nil {
		return fmt.Errorf("wire: client config: %w", err)
	}
	if c.PeerRole != 0 && !c.PeerRole.valid() {
		return fmt.Errorf("wire: client config: peer role %d is not a known role", c.PeerRole)
	}
	return nil
}

// Validate reports a config that cannot work.
func (c *ServerConfig) Validate() error {
	cc := commonDefaults(c.MinVersion, c.MaxVersion, c.Timeout, c.MaxFrameSize, c.WriteTimeout)
	if err := cc.validate(c.Role, c.Name); err != nil {
		return fmt.Errorf("wire: server config: %w", err)
	}
	return nil
}

// Conn is a connection after a successful handshake: what both sides
// agreed on, and the framed streams over it. Hand it to NewMux, or use R
// and W directly for a strictly sequential protocol.
type Conn struct {
	NetConn net.Conn
	R       *FrameReader // accepts only what the peer's role may send at Version
	W       *FrameWriter

	Version uint16 // negotiated protocol version
	MetaID  uint64 // the file system; 0 only if neither side knew it
	Term    uint64 // the server's term as it gave it in the handshake
	Local   Role
	Peer    Role
	// PeerName is the name the peer gave. Authenticated says whether it
	// proved the shared secret; a name alone proves nothing.
	PeerName      string
	Authenticated bool
}

// String names the peer for logs and errors: "chunkserver cs1 (10.0.0.5:40312)".
func (c *Conn) String() string { return peerDesc(c.Peer, c.PeerName, c.NetConn) }

func peerDesc(r Role, name string, nc net.Conn) string {
	s := r.String()
	if name != "" {
		s += " " + strconv.Quote(name)
	}
	if nc != nil && nc.RemoteAddr() != nil {
		s += " (" + nc.RemoteAddr().String() + ")"
	}
	return s
}

func versions(lo, hi uint16) string {
	if lo == hi {
		return "protocol " + strconv.Itoa(int(lo))
	}
	return "protocols " + strconv.Itoa(int(lo)) + "-" + strconv.Itoa(int(hi))
}

// finish arms the streams for the session.
func finish(nc net.Conn, r *FrameReader, w *FrameWriter, c common, conn *Conn) *Conn {
	conn.NetConn, conn.R, conn.W = nc, r, w
	r.SetMaxFrameSize(c.maxFrame)
	w.SetMaxFrameSize(c.maxFrame)
	if c.writeTimeout > 0 {
		w.SetWriteTimeout(c.writeTimeout)
	}
	peer, local, v := conn.Peer, conn.Local, conn.Version
	r.SetAccept(func(t Type) bool { return Allowed(t, peer, local, v) })
	return conn
}

// armDeadline bounds the handshake by timeout and ctx. The returned stop
// clears the deadline and reports whether ctx ended the handshake, in
// which case the connection's deadline may already be in the past.
func armDeadline(ctx context.Context, nc net.Conn, timeout time.Duration) (stop func() error, err error) {
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if err := nc.SetDeadline(dl); err != nil {
		return nil, err
	}
	// Cancellation interrupts blocked reads and writes by moving the
	// deadline into the past, as net/http and crypto/tls do.
	unhook := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	return func() error {
		if !unhook() {
			return ctx.Err()
		}
		return nc.SetDeadline(time.Time{})
	}, nil
}

// transcript is what both MACs cover: the Hello exactly as the client
// sent it and the Challenge exactly as the server sent it. Covering the
// whole Hello, version range included, means a man in the middle who
// lowers the offered versions breaks the proof instead of downgrading the
// session. Decoding is canonical, so re-encoding a received message gives
// the sender's bytes.
func transcript(label string, h *Hello, c *Challenge) []byte {
	var e Enc
	e.String("carpfs auth v1 " + label)
	e.Bytes(Marshal(h))
	e.Bytes(Marshal(c))
	return e.Buf()
}

// clientMAC is the peer's proof; serverMAC the server's, which also
// covers the peer's proof, so it cannot be computed before the peer has
// answered.
func clientMAC(secret []byte, h *Hello, c *Challenge) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(transcript("client", h, c))
	return m.Sum(nil)
}

func serverMAC(secret []byte, h *Hello, c *Challenge, clientProof []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(transcript("server", h, c))
	m.Write(clientProof)
	return m.Sum(nil)
}

// nonce returns NonceSize random bytes. crypto/rand.Read does not fail
// (it crashes the program if the system's source is broken).
func nonce() (n [NonceSize]byte) {
	_, _ = rand.Read(n[:])
	return n
}

// expect reads the next handshake frame, which must be one of want.
// A Refuse from the peer becomes a *RefusedError with ByPeer set.
func expect(r *FrameReader, want ...Type) (Message, error) {
	f, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	if f.ID != 0 || f.Flags != 0 {
		return nil, &RefusedError{Code: RefuseProtocol, Message: fmt.Sprintf("handshake %s with request id %d and flags %#x, want 0 and 0", f.Type, f.ID, f.Flags)}
	}
	ok := f.Type == TypeRefuse
	for _, t := range want {
		ok = ok || f.Type == t
	}
	if !ok {
		return nil, &RefusedError{Code: RefuseProtocol, Message: fmt.Sprintf("got %s during the handshake, want %v", f.Type, want)}
	}
	m, err := Decode(f)
	if err != nil {
		return nil, &RefusedError{Code: RefuseProtocol, Message: err.Error()}
	}
	if rf, ok := m.(*Refuse); ok {
		return nil, &RefusedError{Code: rf.Code, Message: rf.Message, ByPeer: true}
	}
	return m, nil
}

// refuse sends a Refuse (best effort: the peer may be gone, and the
// refusal is the error that matters) and returns it as an error.
func refuse(w *FrameWriter, code RefuseCode, format string, args ...any) error {
	rf := &Refuse{Code: code, Message: fmt.Sprintf(format, args...)}
	_ = w.Send(0, 0, rf)
	return &RefusedError{Code: rf.Code, Message: rf.Message}
}

// refuseErr tells the peer why the handshake ends when the fault is
// ours to report: a refusal we decided, or a bad frame it sent (a carpfs
// peer can then log the reason; anything else ignores it). The error is
// returned unchanged. Refusals by the peer and I/O errors need no answer.
func refuseErr(w *FrameWriter, err error) error {
	var re *RefusedError
	switch {
	case errors.As(err, &re) && !re.ByPeer:
		return refuse(w, re.Code, "%s", re.Message)
	case errors.Is(err, ErrFrame):
		_ = w.Send(0, 0, &Refuse{Code: RefuseProtocol, Message: refusalText(err)})
	}
	return err
}

// refusalText words a protocol error for the peer that caused it, from
// the point of view of the side that received the bad input.
func refusalText(err error) string {
	var fe *FrameError
	if errors.As(err, &fe) {
		return fmt.Sprintf("received a bad frame at stream byte %d: %s", fe.Offset, fe.Reason)
	}
	return "received " + strings.TrimPrefix(err.Error(), "wire: ")
}
