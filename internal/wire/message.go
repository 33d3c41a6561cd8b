package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Type is a frame's message type. Numbers are never reused: a type that
// is retired stays reserved, so two versions never read one number two
// ways. docs/PROTOCOL.md lists them, and a test keeps it in step with
// the registry below.
type Type uint16

// Message types. Blocks of numbers are reserved per link (see
// docs/PROTOCOL.md) so that a type number alone tells a reader of a
// packet capture who sent it.
const (
	// Handshake. Hello and Refuse are frozen: every version, past and
	// future, reads and writes them as version 1 does, so that any two
	// builds can at least tell each other why they will not talk.
	TypeHello     Type = 1
	TypeChallenge Type = 2
	TypeAuth      Type = 3
	TypeWelcome   Type = 4
	TypeRefuse    Type = 5

	// Generic, on every link.
	TypePing  Type = 16
	TypePong  Type = 17
	TypeError Type = 18

	// Client and master (100-199): sessions and metadata operations,
	// see msg_client.go.
	TypeSessionChallenge Type = 100
	TypeSessionNonce     Type = 101
	TypeSessionOpen      Type = 102
	TypeSessionOpened    Type = 103
	TypeSessionEnd       Type = 104
	TypeOk               Type = 105
	TypeEntry            Type = 106
	TypeLookupName       Type = 107
	TypeGetAttr          Type = 108
	TypeSetAttr          Type = 109
	TypeCreate           Type = 110
	TypeSymlink          Type = 111
	TypeLink             Type = 112
	TypeUnlink           Type = 113
	TypeRmdir            Type = 114
	TypeRename           Type = 115
	TypeReadLink         Type = 116
	TypeLinkTarget       Type = 117
	TypeReadDir          Type = 118
	TypeDirPage          Type = 119
	TypeGetXattr         Type = 120
	TypeXattrValue       Type = 121
	TypeListXattr        Type = 122
	TypeXattrNames       Type = 123
	TypeSetXattr         Type = 124
	TypeRemoveXattr      Type = 125
	TypeStatFS           Type = 126
	TypeFSStats          Type = 127
	TypeOpen             Type = 128
	TypeRelease          Type = 129
	TypeSetGoal          Type = 130
	TypeGetGoal          Type = 131
	TypeChunkRead        Type = 132
	TypeChunkWrite       Type = 133
	TypeChunkInfo        Type = 134
	TypeChunkWriteEnd    Type = 135
	TypeLock             Type = 136
	TypeGetLock          Type = 137
	TypeLockInfo         Type = 138
	TypeChanged          Type = 139
	TypeReadDirNames     Type = 140
	TypeDirNames         Type = 141

	// Chunkserver and master (200-299): registration, reports and the
	// master's commands, see msg_chunk.go.
	TypeCSRegister       Type = 200
	TypeCSRegisterChunks Type = 201
	TypeCSRegisterDone   Type = 202
	TypeCSHeartbeat      Type = 203
	TypeCSChunkDamaged   Type = 204
	TypeCSChunkLost      Type = 205
	TypeCSCreate         Type = 210
	TypeCSDelete         Type = 211
	TypeCSSetVersion     Type = 212
	TypeCSTruncate       Type = 213
	TypeCSReplicate      Type = 214

	// Metalogger and master (300-399): terms and the changelog stream,
	// see msg_ml.go.
	TypeMLGrant    Type = 300
	TypeMLState    Type = 301
	TypeMLTruncate Type = 302
	TypeMLAppend   Type = 303
	TypeMLAck      Type = 304
	TypeMLFetch    Type = 305
	TypeMLLines    Type = 306
	TypeMLDumpRead Type = 307
	TypeMLDumpData Type = 308

	// The data port (400-449): clients and chunkservers to chunkservers,
	// see msg_data.go.
	TypeCSRead  Type = 400
	TypeCSData  Type = 401
	TypeCSWrite Type = 402
	TypeCSSync  Type = 403
)

// Message is a frame payload as a Go value. Each message type is a struct
// with hand-written Encode and Decode: no reflection, so what goes on the
// wire is in plain sight next to the fields.
type Message interface {
	// Type is the frame type the message travels as.
	Type() Type
	// Encode appends the message's fields.
	Encode(e *Enc)
	// Decode sets every field from d and returns d.Err() or a range
	// error. The caller checks for trailing bytes (see Unmarshal).
	Decode(d *Dec) error
}

// Role is what a peer is. Hello carries the connecting side's role, and
// the registry says which roles send and receive each message type.
type Role uint8

// Roles. 0 is invalid so that a zero config is caught.
const (
	RoleClient      Role = 1 // mfsmount
	RoleChunkserver Role = 2 // mfschunkserver
	RoleMetalogger  Role = 3 // mfsmetalogger
	RoleAdmin       Role = 4 // mfscli, carpwatch
	RoleMaster      Role = 5 // mfsmaster
	maxRole              = RoleMaster
)

var roleNames = [...]string{"", "client", "chunkserver", "metalogger", "admin", "master"}

func (r Role) String() string {
	if r >= 1 && r <= maxRole {
		return roleNames[r]
	}
	return "role " + strconv.Itoa(int(r))
}

func (r Role) valid() bool { return r >= 1 && r <= maxRole }

// RoleSet is a set of roles, one bit per role.
type RoleSet uint16

// Roles returns the set of the given roles.
func Roles(rs ...Role) RoleSet {
	var s RoleSet
	for _, r := range rs {
		s |= 1 << r
	}
	return s
}

// AllRoles is every role.
const AllRoles = RoleSet(1<<RoleClient | 1<<RoleChunkserver | 1<<RoleMetalogger | 1<<RoleAdmin | 1<<RoleMaster)

// Has reports whether r is in s.
func (s RoleSet) Has(r Role) bool { return r.valid() && s&(1<<r) != 0 }

func (s RoleSet) String() string {
	var names []string
	for r := Role(1); r <= maxRole; r++ {
		if s.Has(r) {
			names = append(names, r.String()+"s")
		}
	}
	switch len(names) {
	case 0:
		return "no one"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// MessageInfo describes one message type: the registry's row.
type MessageInfo struct {
	Type Type
	Name string
	// From and To are the roles that may send and receive it. A reader
	// refuses a frame whose type its own role may not receive from the
	// peer's role.
	From, To RoleSet
	// Since is the first protocol version that has the type; a session
	// at an older version refuses it.
	Since uint16
	// Handshake types are read only by the handshake, never in a session.
	Handshake bool
	// New returns a zero message to decode into.
	New func() Message
}

// handshakeSenders may open a connection (and so send Hello and Auth);
// handshakeServers answer it. A master never dials another master.
const (
	clients          = RoleSet(1 << RoleClient)
	masters          = RoleSet(1 << RoleMaster)
	chunkservers     = RoleSet(1 << RoleChunkserver)
	metaloggers      = RoleSet(1 << RoleMetalogger)
	handshakeSenders = AllRoles &^ RoleSet(1<<RoleMaster)
	handshakeServers = RoleSet(1<<RoleMaster | 1<<RoleChunkserver | 1<<RoleMetalogger)
)

// messages is the registry: every message type, in type order.
// docs/PROTOCOL.md has the same table for humans; TestProtocolDoc fails
// when the two differ. To add a message: define its struct (in a file per
// link, msg_<link>.go), add a row here and there, and a sample in
// samples_test.go; see "Adding a message" in docs/PROTOCOL.md.
var messages = []MessageInfo{
	{TypeHello, "Hello", handshakeSenders, handshakeServers, 1, true, func() Message { return new(Hello) }},
	{TypeChallenge, "Challenge", handshakeServers, handshakeSenders, 1, true, func() Message { return new(Challenge) }},
	{TypeAuth, "Auth", handshakeSenders, handshakeServers, 1, true, func() Message { return new(Auth) }},
	{TypeWelcome, "Welcome", handshakeServers, handshakeSenders, 1, true, func() Message { return new(Welcome) }},
	// Refuse is also the last word in a session: a master stepping down
	// or a peer that meets a newer term says why before it closes.
	{TypeRefuse, "Refuse", AllRoles, AllRoles, 1, false, func() Message { return new(Refuse) }},
	{TypePing, "Ping", AllRoles, AllRoles, 1, false, func() Message { return new(Ping) }},
	{TypePong, "Pong", AllRoles, AllRoles, 1, false, func() Message { return new(Pong) }},
	{TypeError, "Error", AllRoles, AllRoles, 1, false, func() Message { return new(Error) }},
	// Client and master. Entry and the other replies go only from the
	// master to clients; requests only the other way. Ok also answers
	// requests between chunkservers and the master, either way.
	{TypeSessionChallenge, "SessionChallenge", clients, masters, 1, false, func() Message { return new(SessionChallenge) }},
	{TypeSessionNonce, "SessionNonce", masters, clients, 1, false, func() Message { return new(SessionNonce) }},
	{TypeSessionOpen, "SessionOpen", clients, masters, 1, false, func() Message { return new(SessionOpen) }},
	{TypeSessionOpened, "SessionOpened", masters, clients, 1, false, func() Message { return new(SessionOpened) }},
	{TypeSessionEnd, "SessionEnd", clients, masters, 1, false, func() Message { return new(SessionEnd) }},
	{TypeOk, "Ok", masters | chunkservers, clients | chunkservers | masters, 1, false, func() Message { return new(Ok) }},
	{TypeEntry, "Entry", masters, clients, 1, false, func() Message { return new(Entry) }},
	{TypeLookupName, "LookupName", clients, masters, 1, false, func() Message { return new(LookupName) }},
	{TypeGetAttr, "GetAttr", clients, masters, 1, false, func() Message { return new(GetAttr) }},
	{TypeSetAttr, "SetAttr", clients, masters, 1, false, func() Message { return new(SetAttr) }},
	{TypeCreate, "Create", clients, masters, 1, false, func() Message { return new(Create) }},
	{TypeSymlink, "Symlink", clients, masters, 1, false, func() Message { return new(Symlink) }},
	{TypeLink, "Link", clients, masters, 1, false, func() Message { return new(Link) }},
	{TypeUnlink, "Unlink", clients, masters, 1, false, func() Message { return new(Unlink) }},
	{TypeRmdir, "Rmdir", clients, masters, 1, false, func() Message { return new(Rmdir) }},
	{TypeRename, "Rename", clients, masters, 1, false, func() Message { return new(Rename) }},
	{TypeReadLink, "ReadLink", clients, masters, 1, false, func() Message { return new(ReadLink) }},
	{TypeLinkTarget, "LinkTarget", masters, clients, 1, false, func() Message { return new(LinkTarget) }},
	{TypeReadDir, "ReadDir", clients, masters, 1, false, func() Message { return new(ReadDir) }},
	{TypeDirPage, "DirPage", masters, clients, 1, false, func() Message { return new(DirPage) }},
	{TypeGetXattr, "GetXattr", clients, masters, 1, false, func() Message { return new(GetXattr) }},
	{TypeXattrValue, "XattrValue", masters, clients, 1, false, func() Message { return new(XattrValue) }},
	{TypeListXattr, "ListXattr", clients, masters, 1, false, func() Message { return new(ListXattr) }},
	{TypeXattrNames, "XattrNames", masters, clients, 1, false, func() Message { return new(XattrNames) }},
	{TypeSetXattr, "SetXattr", clients, masters, 1, false, func() Message { return new(SetXattr) }},
	{TypeRemoveXattr, "RemoveXattr", clients, masters, 1, false, func() Message { return new(RemoveXattr) }},
	{TypeStatFS, "StatFS", clients, masters, 1, false, func() Message { return new(StatFS) }},
	{TypeFSStats, "FSStats", masters, clients, 1, false, func() Message { return new(FSStats) }},
	{TypeOpen, "Open", clients, masters, 1, false, func() Message { return new(Open) }},
	{TypeRelease, "Release", clients, masters, 1, false, func() Message { return new(Release) }},
	{TypeSetGoal, "SetGoal", clients, masters, 1, false, func() Message { return new(SetGoal) }},
	{TypeGetGoal, "GetGoal", clients, masters, 1, false, func() Message { return new(GetGoal) }},
	{TypeChunkRead, "ChunkRead", clients, masters, 1, false, func() Message { return new(ChunkRead) }},
	{TypeChunkWrite, "ChunkWrite", clients, masters, 1, false, func() Message { return new(ChunkWrite) }},
	{TypeChunkInfo, "ChunkInfo", masters, clients, 1, false, func() Message { return new(ChunkInfo) }},
	{TypeChunkWriteEnd, "ChunkWriteEnd", clients, masters, 1, false, func() Message { return new(ChunkWriteEnd) }},
	{TypeLock, "Lock", clients, masters, 1, false, func() Message { return new(Lock) }},
	{TypeGetLock, "GetLock", clients, masters, 1, false, func() Message { return new(GetLock) }},
	{TypeLockInfo, "LockInfo", masters, clients, 1, false, func() Message { return new(LockInfo) }},
	{TypeChanged, "Changed", masters, clients, 2, false, func() Message { return new(Changed) }},
	{TypeReadDirNames, "ReadDirNames", clients, masters, 2, false, func() Message { return new(ReadDirNames) }},
	{TypeDirNames, "DirNames", masters, clients, 2, false, func() Message { return new(DirNames) }},
	// Chunkserver and master: reports up, commands down.
	{TypeCSRegister, "CSRegister", chunkservers, masters, 1, false, func() Message { return new(CSRegister) }},
	{TypeCSRegisterChunks, "CSRegisterChunks", chunkservers, masters, 1, false, func() Message { return new(CSRegisterChunks) }},
	{TypeCSRegisterDone, "CSRegisterDone", chunkservers, masters, 1, false, func() Message { return new(CSRegisterDone) }},
	{TypeCSHeartbeat, "CSHeartbeat", chunkservers, masters, 1, false, func() Message { return new(CSHeartbeat) }},
	{TypeCSChunkDamaged, "CSChunkDamaged", chunkservers, masters, 1, false, func() Message { return new(CSChunkDamaged) }},
	{TypeCSChunkLost, "CSChunkLost", chunkservers, masters, 1, false, func() Message { return new(CSChunkLost) }},
	{TypeCSCreate, "CSCreate", masters, chunkservers, 1, false, func() Message { return new(CSCreate) }},
	{TypeCSDelete, "CSDelete", masters, chunkservers, 1, false, func() Message { return new(CSDelete) }},
	{TypeCSSetVersion, "CSSetVersion", masters, chunkservers, 1, false, func() Message { return new(CSSetVersion) }},
	{TypeCSTruncate, "CSTruncate", masters, chunkservers, 1, false, func() Message { return new(CSTruncate) }},
	{TypeCSReplicate, "CSReplicate", masters, chunkservers, 1, false, func() Message { return new(CSReplicate) }},
	// Metalogger and master: the master asks, the metalogger answers and
	// acknowledges.
	{TypeMLGrant, "MLGrant", masters, metaloggers, 2, false, func() Message { return new(MLGrant) }},
	{TypeMLState, "MLState", metaloggers, masters, 2, false, func() Message { return new(MLState) }},
	{TypeMLTruncate, "MLTruncate", masters, metaloggers, 2, false, func() Message { return new(MLTruncate) }},
	{TypeMLAppend, "MLAppend", masters, metaloggers, 2, false, func() Message { return new(MLAppend) }},
	{TypeMLAck, "MLAck", metaloggers, masters, 2, false, func() Message { return new(MLAck) }},
	{TypeMLFetch, "MLFetch", masters, metaloggers, 2, false, func() Message { return new(MLFetch) }},
	{TypeMLLines, "MLLines", metaloggers, masters, 2, false, func() Message { return new(MLLines) }},
	{TypeMLDumpRead, "MLDumpRead", metaloggers, masters, 2, false, func() Message { return new(MLDumpRead) }},
	{TypeMLDumpData, "MLDumpData", masters, metaloggers, 2, false, func() Message { return new(MLDumpData) }},
	// The data port: clients and chunkservers (replicating, forwarding a
	// write down the chain) ask a chunkserver.
	{TypeCSRead, "CSRead", clients | chunkservers, chunkservers, 1, false, func() Message { return new(CSRead) }},
	{TypeCSData, "CSData", chunkservers, clients | chunkservers, 1, false, func() Message { return new(CSData) }},
	{TypeCSWrite, "CSWrite", clients | chunkservers, chunkservers, 1, false, func() Message { return new(CSWrite) }},
	{TypeCSSync, "CSSync", clients | chunkservers, chunkservers, 1, false, func() Message { return new(CSSync) }},
}

// byType indexes messages. It is built once from the table above and
// never changes: static protocol data, not configuration.
var byType = func() map[Type]*MessageInfo {
	m := make(map[Type]*MessageInfo, len(messages))
	for i := range messages {
		mi := &messages[i]
		if _, dup := m[mi.Type]; dup || mi.Type == 0 || mi.New().Type() != mi.Type {
			panic(fmt.Sprintf("wire: registry row %d (%s) is a duplicate, zero, or New returns another type", i, mi.Name))
		}
		m[mi.Type] = mi
	}
	return m
}()

// Lookup returns the registry row of t.
func Lookup(t Type) (MessageInfo, bool) {
	mi, ok := byType[t]
	if !ok {
		return MessageInfo{}, false
	}
	return *mi, true
}

// Messages returns a copy of the registry, in type order.
func Messages() []MessageInfo { return append([]MessageInfo(nil), messages...) }

func (t Type) String() string {
	if mi, ok := byType[t]; ok {
		return mi.Name
	}
	return "type " + strconv.Itoa(int(t))
}

// Allowed reports whether a session at version v in which local receives
// from peer accepts frames of type t.
func Allowed(t Type, peer, local Role, v uint16) bool {
	mi, ok := byType[t]
	return ok && !mi.Handshake && mi.Since <= v && mi.From.Has(peer) && mi.To.Has(local)
}

// Unmarshal decodes payload as m, refusing trailing bytes.
func Unmarshal(payload []byte, m Message) error {
	d := NewDec(payload)
	if err := m.Decode(d); err != nil {
		return fmt.Errorf("wire: decode %s: %w", m.Type(), err)
	}
	if err := d.End(); err != nil {
		return fmt.Errorf("wire: decode %s: %w", m.Type(), err)
	}
	return nil
}

// Decode decodes a frame into a new message of its type.
func Decode(f Frame) (Message, error) {
	mi, ok := byType[f.Type]
	if !ok {
		return nil, fmt.Errorf("wire: decode %s: %w: unknown type", f.Type, ErrMessage)
	}
	m := mi.New()
	if err := Unmarshal(f.Payload, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Marshal returns m's payload bytes.
func Marshal(m Message) []byte {
	var e Enc
	m.Encode(&e)
	return e.Buf()
}
