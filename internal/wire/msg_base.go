package wire

import "strconv"

// This file holds the messages every link uses: the handshake and the
// generic Ping, Pong and Error. Field order on the wire is the order of
// the Encode calls; docs/PROTOCOL.md lists it.
//
// The handshake decoders check structure only (lengths, sizes) and leave
// meaning (a valid role, a sane version range) to the handshake, which
// can then answer with a Refuse that says what is wrong instead of
// dropping a connection over a frame it could not decode.

// NonceSize is the size of handshake nonces and MACs (HMAC-SHA256).
const NonceSize = 32

// Hello opens every connection, sent by the side that dialed. Frozen:
// see TypeHello.
type Hello struct {
	MinVersion, MaxVersion uint16 // protocol versions the sender speaks
	Role                   Role
	MetaID                 uint64 // file system the sender belongs to; 0 = not known yet
	Term                   uint64 // highest master term the sender has seen
	Nonce                  [NonceSize]byte
	Name                   string // host name or id, for logs and refusals
	// Ext is empty in version 1. It lets a later version add to Hello
	// what an older server can skip, since Hello is read before any
	// version is agreed.
	Ext []byte
}

func (*Hello) Type() Type { return TypeHello }

func (m *Hello) Encode(e *Enc) {
	e.U16(m.MinVersion)
	e.U16(m.MaxVersion)
	e.U8(uint8(m.Role))
	e.U64(m.MetaID)
	e.U64(m.Term)
	e.Raw(m.Nonce[:])
	e.String(m.Name)
	e.Bytes(m.Ext)
}

func (m *Hello) Decode(d *Dec) error {
	m.MinVersion = d.U16()
	m.MaxVersion = d.U16()
	m.Role = Role(d.U8())
	m.MetaID = d.U64()
	m.Term = d.U64()
	d.Raw(m.Nonce[:])
	m.Name = d.String()
	m.Ext = d.Bytes()
	return d.Err()
}

// Challenge asks the peer to prove it holds the shared secret. It carries
// what the server decided (version) and is (role, metaid, term) because
// the proof covers them: a man in the middle cannot change them.
type Challenge struct {
	Version uint16 // the version the session will use
	Role    Role   // the server's role
	MetaID  uint64
	Term    uint64
	Nonce   [NonceSize]byte
	Name    string // the server's name, for the peer's refusals and logs
}

func (*Challenge) Type() Type { return TypeChallenge }

func (m *Challenge) Encode(e *Enc) {
	e.U16(m.Version)
	e.U8(uint8(m.Role))
	e.U64(m.MetaID)
	e.U64(m.Term)
	e.Raw(m.Nonce[:])
	e.String(m.Name)
}

func (m *Challenge) Decode(d *Dec) error {
	m.Version = d.U16()
	m.Role = Role(d.U8())
	m.MetaID = d.U64()
	m.Term = d.U64()
	d.Raw(m.Nonce[:])
	m.Name = d.String()
	return d.Err()
}

// Auth answers a Challenge. MAC is empty when the peer has no secret
// configured, so the server can say "missing" rather than "wrong".
type Auth struct {
	MAC []byte // empty or NonceSize bytes
}

func (*Auth) Type() Type { return TypeAuth }

func (m *Auth) Encode(e *Enc) { e.Bytes(m.MAC) }

func (m *Auth) Decode(d *Dec) error {
	m.MAC = d.Bytes()
	if n := len(m.MAC); n != 0 && n != NonceSize {
		d.Fail("MAC of %d bytes, want 0 or %d", n, NonceSize)
	}
	return d.Err()
}

// Welcome ends a successful handshake. After a Challenge it repeats the
// Challenge's fields and carries the server's own MAC, proving to the
// peer that the server holds the secret too.
type Welcome struct {
	Version uint16
	Role    Role // the server's role
	MetaID  uint64
	Term    uint64
	Name    string // the server's name, for logs
	MAC     []byte // empty, or NonceSize bytes after a Challenge
}

func (*Welcome) Type() Type { return TypeWelcome }

func (m *Welcome) Encode(e *Enc) {
	e.U16(m.Version)
	e.U8(uint8(m.Role))
	e.U64(m.MetaID)
	e.U64(m.Term)
	e.String(m.Name)
	e.Bytes(m.MAC)
}

func (m *Welcome) Decode(d *Dec) error {
	m.Version = d.U16()
	m.Role = Role(d.U8())
	m.MetaID = d.U64()
	m.Term = d.U64()
	m.Name = d.String()
	m.MAC = d.Bytes()
	if n := len(m.MAC); n != 0 && n != NonceSize {
		d.Fail("MAC of %d bytes, want 0 or %d", n, NonceSize)
	}
	return d.Err()
}

// RefuseCode says why a peer is refused, for programs; Refuse.Message
// says it for people.
type RefuseCode uint16

// Refusal codes. Frozen with Refuse: new codes may be added, old ones
// keep their numbers.
const (
	RefuseProtocol    RefuseCode = 1 // malformed or unexpected handshake message
	RefuseVersion     RefuseCode = 2 // no protocol version in common
	RefuseRole        RefuseCode = 3 // this listener does not serve the peer's role
	RefuseMetaID      RefuseCode = 4 // the peers belong to different file systems
	RefuseTerm        RefuseCode = 5 // the master's term is older than one the peer saw
	RefuseAuthMissing RefuseCode = 6 // a secret is required and the peer has none
	RefuseAuthFailed  RefuseCode = 7 // the proof of the secret is wrong
	RefuseShutdown    RefuseCode = 8 // the sender is stopping or stepping down
)

var refuseNames = [...]string{"", "protocol", "version", "role", "metaid", "term", "auth-missing", "auth-failed", "shutdown"}

func (c RefuseCode) String() string {
	if int(c) < len(refuseNames) && c != 0 {
		return refuseNames[c]
	}
	return "code " + strconv.Itoa(int(c))
}

// Refuse ends a handshake or a session, saying why. Frozen: see
// TypeHello. Both sides report Message verbatim, so the operator reads
// the same sentence in the logs of either.
type Refuse struct {
	Code    RefuseCode
	Message string
}

func (*Refuse) Type() Type { return TypeRefuse }

func (m *Refuse) Encode(e *Enc) {
	e.U16(uint16(m.Code))
	e.String(m.Message)
}

func (m *Refuse) Decode(d *Dec) error {
	m.Code = RefuseCode(d.U16())
	m.Message = d.String()
	return d.Err()
}

// Ping asks for a Pong with the same Data: liveness and round-trip time.
type Ping struct {
	Data []byte
}

func (*Ping) Type() Type { return TypePing }

func (m *Ping) Encode(e *Enc) { e.Bytes(m.Data) }

// Size lets a FrameWriter reserve room for big pings (see Sizer).
func (m *Ping) Size() int { return bytesSize(m.Data) }

func (m *Ping) Decode(d *Dec) error {
	m.Data = d.Bytes()
	return d.Err()
}

// Pong answers a Ping.
type Pong struct {
	Data []byte
}

func (*Pong) Type() Type { return TypePong }

func (m *Pong) Encode(e *Enc) { e.Bytes(m.Data) }

// Size lets a FrameWriter reserve room for big pongs (see Sizer).
func (m *Pong) Size() int { return bytesSize(m.Data) }

func (m *Pong) Decode(d *Dec) error {
	m.Data = d.Bytes()
	return d.Err()
}

// Error is the reply to a request that failed. Errno is a POSIX errno
// (the values meta.Apply returns, as on Linux) so a client can hand it
// to the kernel unchanged; Message explains it for logs.
type Error struct {
	Errno   uint32
	Message string
}

func (*Error) Type() Type { return TypeError }

func (m *Error) Encode(e *Enc) {
	e.U32(m.Errno)
	e.String(m.Message)
}

func (m *Error) Decode(d *Dec) error {
	m.Errno = d.U32()
	m.Message = d.String()
	return d.Err()
}
