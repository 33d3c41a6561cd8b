package wire

import (
	"crypto/hmac"
	"crypto/sha256"
)

// This file holds the messages between a mount (client) and the master:
// sessions and the metadata operations a FUSE file system needs. Type
// numbers are in the 100-199 block.
//
// Conventions, chosen so that a FUSE request costs one round trip:
//
//   - Every operation request starts with a ReqHeader: the session, a
//     sequence number the client raises for each request (so a retried
//     mutation can later be answered exactly once), and the uid and gid
//     of the process that made the system call, which own what it
//     creates.
//   - A request that fails is answered with Error, whose Errno is the
//     POSIX errno to hand to the kernel (the client sees a *RemoteError).
//   - Whatever names or changes an inode answers with Entry, its
//     attributes after the operation: lookup, getattr, setattr, create,
//     mkdir, mknod, symlink, link, open, getgoal. The kernel caches them,
//     so no getattr follows.
//   - Operations with nothing to return answer Ok.
//   - Inode 1 is the root of the session's export, whatever inode the
//     exported directory has on the master.

// ReqHeader starts every operation request.
type ReqHeader struct {
	Session uint64 // from SessionOpened; must be this connection's session
	Seq     uint64 // raised by the client for every request
	UID     uint32 // caller's credentials, before the export's mapping
	GID     uint32
}

// Header returns the header, so a server can reach it in any request
// (every request type embeds ReqHeader and so has this method).
func (h *ReqHeader) Header() *ReqHeader { return h }

func (h *ReqHeader) encodeHdr(e *Enc) {
	e.U64(h.Session)
	e.U64(h.Seq)
	e.U32(h.UID)
	e.U32(h.GID)
}

func (h *ReqHeader) decodeHdr(d *Dec) {
	h.Session = d.U64()
	h.Seq = d.U64()
	h.UID = d.U32()
	h.GID = d.U32()
}

// Attr is an inode's attributes as stat(2) shows them (meta.Attr on the
// wire). It is a field of messages, not a message.
type Attr struct {
	Inode               uint32
	NodeType            uint8 // meta.Type: 1 file, 2 dir, 3 symlink, 4 fifo, 5 socket, 6 char, 7 block
	Mode                uint16
	UID, GID            uint32
	Atime, Mtime, Ctime uint32
	Nlink               uint32
	Size                uint64
	Rdev                uint32
	Goal                uint8
}

// attrSize is the encoded size of an Attr: 4+1+2+6*4+8+4+1.
const attrSize = 44

func (a *Attr) encode(e *Enc) {
	e.U32(a.Inode)
	e.U8(a.NodeType)
	e.U16(a.Mode)
	e.U32(a.UID)
	e.U32(a.GID)
	e.U32(a.Atime)
	e.U32(a.Mtime)
	e.U32(a.Ctime)
	e.U32(a.Nlink)
	e.U64(a.Size)
	e.U32(a.Rdev)
	e.U8(a.Goal)
}

func (a *Attr) decode(d *Dec) {
	a.Inode = d.U32()
	a.NodeType = d.U8()
	a.Mode = d.U16()
	a.UID = d.U32()
	a.GID = d.U32()
	a.Atime = d.U32()
	a.Mtime = d.U32()
	a.Ctime = d.U32()
	a.Nlink = d.U32()
	a.Size = d.U64()
	a.Rdev = d.U32()
	a.Goal = d.U8()
}

// SessionProof is the password proof a SessionOpen carries for an export
// with password=: HMAC-SHA256 keyed with the password over a label, the
// nonce the master gave this connection (SessionNonce), the path and the
// session being resumed. The master forgets a nonce once it is used, so a
// proof read off the network opens nothing.
func SessionProof(password string, nonce [NonceSize]byte, path string, session uint64) []byte {
	var e Enc
	e.String("carpfs session v1")
	e.Raw(nonce[:])
	e.String(path)
	e.U64(session)
	m := hmac.New(sha256.New, []byte(password))
	m.Write(e.Buf())
	return m.Sum(nil)
}

// SessionChallenge asks the master for a nonce to prove a password with.
type SessionChallenge struct{}

func (*SessionChallenge) Type() Type          { return TypeSessionChallenge }
func (*SessionChallenge) Encode(*Enc)         {}
func (*SessionChallenge) Decode(d *Dec) error { return d.Err() }

// SessionNonce answers SessionChallenge. It is valid for one SessionOpen
// on this connection.
type SessionNonce struct {
	Nonce [NonceSize]byte
}

func (*SessionNonce) Type() Type      { return TypeSessionNonce }
func (m *SessionNonce) Encode(e *Enc) { e.Raw(m.Nonce[:]) }
func (m *SessionNonce) Decode(d *Dec) error {
	d.Raw(m.Nonce[:])
	return d.Err()
}

// SessionOpen opens a session on an exported directory, or resumes one
// (SessionID non-zero) after a lost connection, keeping its open files.
type SessionOpen struct {
	SessionID uint64 // 0 opens a new session
	Path      string // the directory to mount, "/" or a subdirectory
	Info      string // free text for the master's session list: host, mount point, version
	Proof     []byte // empty, or SessionProof's NonceSize bytes
}

func (*SessionOpen) Type() Type { return TypeSessionOpen }

func (m *SessionOpen) Encode(e *Enc) {
	e.U64(m.SessionID)
	e.String(m.Path)
	e.String(m.Info)
	e.Bytes(m.Proof)
}

func (m *SessionOpen) Decode(d *Dec) error {
	m.SessionID = d.U64()
	m.Path = d.String()
	m.Info = d.String()
	m.Proof = d.Bytes()
	if n := len(m.Proof); n != 0 && n != NonceSize {
		d.Fail("proof of %d bytes, want 0 or %d", n, NonceSize)
	}
	return d.Err()
}

// SessionOpened answers SessionOpen.
type SessionOpened struct {
	SessionID uint64
	ReadOnly  bool // the export is read-only: mutations fail with EROFS
	Root      Attr // the export's root, inode 1 for this session
}

func (*SessionOpened) Type() Type { return TypeSessionOpened }

func (m *SessionOpened) Encode(e *Enc) {
	e.U64(m.SessionID)
	e.Bool(m.ReadOnly)
	m.Root.encode(e)
}

func (m *SessionOpened) Decode(d *Dec) error {
	m.SessionID = d.U64()
	m.ReadOnly = d.Bool()
	m.Root.decode(d)
	return d.Err()
}

// SessionEnd is the client's goodbye (umount): the master closes the
// session at once, releasing its open files, instead of keeping it for
// a reconnect. Answered by Ok.
type SessionEnd struct {
	SessionID uint64
}

func (*SessionEnd) Type() Type      { return TypeSessionEnd }
func (m *SessionEnd) Encode(e *Enc) { e.U64(m.SessionID) }
func (m *SessionEnd) Decode(d *Dec) error {
	m.SessionID = d.U64()
	return d.Err()
}

// Ok answers a request that succeeded with nothing to return.
type Ok struct{}

func (*Ok) Type() Type          { return TypeOk }
func (*Ok) Encode(*Enc)         {}
func (*Ok) Decode(d *Dec) error { return d.Err() }

// Entry answers with an inode's attributes after the operation.
type Entry struct {
	Attr Attr
}

func (*Entry) Type() Type      { return TypeEntry }
func (m *Entry) Encode(e *Enc) { m.Attr.encode(e) }
func (m *Entry) Decode(d *Dec) error {
	m.Attr.decode(d)
	return d.Err()
}

// Changed answers a change to directories (since protocol 2, instead of
// Entry or Ok): the inode made or linked (Inode 0 when none, as after
// Unlink, Rmdir and Rename), and the attributes of the directories
// changed, read just after the change. A mount can then answer the
// kernel's next question about those directories without asking.
type Changed struct {
	Attr Attr
	Dirs []Attr // at most MaxChangedDirs
}

// MaxChangedDirs bounds Changed.Dirs: a rename changes two directories.
const MaxChangedDirs = 2

func (*Changed) Type() Type { return TypeChanged }
func (m *Changed) Encode(e *Enc) {
	m.Attr.encode(e)
	e.U8(uint8(len(m.Dirs)))
	for i := range m.Dirs {
		m.Dirs[i].encode(e)
	}
}
func (m *Changed) Decode(d *Dec) error {
	m.Attr.decode(d)
	n := d.U8()
	if d.Err() == nil && n > MaxChangedDirs {
		d.Fail("%d directories changed, at most %d", n, MaxChangedDirs)
	}
	m.Dirs = nil
	if d.Err() == nil && n > 0 {
		m.Dirs = make([]Attr, n)
		for i := range m.Dirs {
			m.Dirs[i].decode(d)
		}
	}
	return d.Err()
}

// LookupName finds Name in directory Parent. Answered by Entry.
type LookupName struct {
	ReqHeader
	Parent uint32
	Name   string
}

func (*LookupName) Type() Type { return TypeLookupName }
func (m *LookupName) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Parent)
	e.String(m.Name)
}
func (m *LookupName) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Parent = d.U32()
	m.Name = d.String()
	return d.Err()
}

// GetAttr asks for an inode's attributes. Answered by Entry.
type GetAttr struct {
	ReqHeader
	Inode uint32
}

func (*GetAttr) Type() Type { return TypeGetAttr }
func (m *GetAttr) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
}
func (m *GetAttr) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	return d.Err()
}

// SetAttr mask bits: which fields of a SetAttr apply. The first five
// are meta's SetAttr bits; Size truncates; the Now bits set a time to the
// master's clock (utimensat with UTIME_NOW), ignoring Atime or Mtime.
const (
	SetAttrMode     = 1 << 0
	SetAttrUID      = 1 << 1
	SetAttrGID      = 1 << 2
	SetAttrAtime    = 1 << 3
	SetAttrMtime    = 1 << 4
	SetAttrSize     = 1 << 5
	SetAttrAtimeNow = 1 << 6
	SetAttrMtimeNow = 1 << 7
)

// SetAttr changes mode, owner, times and size (chmod, chown, utimens,
// truncate). Answered by Entry.
type SetAttr struct {
	ReqHeader
	Inode        uint32
	Mask         uint8
	Mode         uint16
	NewUID       uint32
	NewGID       uint32
	Atime, Mtime uint32
	Size         uint64
}

func (*SetAttr) Type() Type { return TypeSetAttr }
func (m *SetAttr) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U8(m.Mask)
	e.U16(m.Mode)
	e.U32(m.NewUID)
	e.U32(m.NewGID)
	e.U32(m.Atime)
	e.U32(m.Mtime)
	e.U64(m.Size)
}
func (m *SetAttr) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Mask = d.U8()
	m.Mode = d.U16()
	m.NewUID = d.U32()
	m.NewGID = d.U32()
	m.Atime = d.U32()
	m.Mtime = d.U32()
	m.Size = d.U64()
	return d.Err()
}

// Create makes a file, directory, fifo, socket or device (create, mkdir,
// mknod), owned by the header's credentials. With Open set it also opens
// the new file for the session, as FUSE's create does, in the same round
// trip. Answered by Entry.
type Create struct {
	ReqHeader
	Parent   uint32
	Name     string
	NodeType uint8  // as Attr.NodeType, not symlink
	Mode     uint16 // permission bits, umask already applied
	Rdev     uint32
	Open     bool
}

func (*Create) Type() Type { return TypeCreate }
func (m *Create) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Parent)
	e.String(m.Name)
	e.U8(m.NodeType)
	e.U16(m.Mode)
	e.U32(m.Rdev)
	e.Bool(m.Open)
}
func (m *Create) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Parent = d.U32()
	m.Name = d.String()
	m.NodeType = d.U8()
	m.Mode = d.U16()
	m.Rdev = d.U32()
	m.Open = d.Bool()
	return d.Err()
}

// Symlink makes a symbolic link. Answered by Entry.
type Symlink struct {
	ReqHeader
	Parent uint32
	Name   string
	Target string
}

func (*Symlink) Type() Type { return TypeSymlink }
func (m *Symlink) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Parent)
	e.String(m.Name)
	e.String(m.Target)
}
func (m *Symlink) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Parent = d.U32()
	m.Name = d.String()
	m.Target = d.String()
	return d.Err()
}

// Link adds a hard link. Answered by Entry (the linked inode).
type Link struct {
	ReqHeader
	Inode  uint32
	Parent uint32
	Name   string
}

func (*Link) Type() Type { return TypeLink }
func (m *Link) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U32(m.Parent)
	e.String(m.Name)
}
func (m *Link) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Parent = d.U32()
	m.Name = d.String()
	return d.Err()
}

// Unlink removes a non-directory's name. Answered by Ok.
type Unlink struct {
	ReqHeader
	Parent uint32
	Name   string
}

func (*Unlink) Type() Type { return TypeUnlink }
func (m *Unlink) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Parent)
	e.String(m.Name)
}
func (m *Unlink) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Parent = d.U32()
	m.Name = d.String()
	return d.Err()
}

// Rmdir removes an empty directory. Answered by Ok.
type Rmdir struct {
	ReqHeader
	Parent uint32
	Name   string
}

func (*Rmdir) Type() Type { return TypeRmdir }
func (m *Rmdir) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Parent)
	e.String(m.Name)
}
func (m *Rmdir) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Parent = d.U32()
	m.Name = d.String()
	return d.Err()
}

// Rename moves an entry as rename(2). Answered by Ok.
type Rename struct {
	ReqHeader
	SrcParent uint32
	SrcName   string
	DstParent uint32
	DstName   string
}

func (*Rename) Type() Type { return TypeRename }
func (m *Rename) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.SrcParent)
	e.String(m.SrcName)
	e.U32(m.DstParent)
	e.String(m.DstName)
}
func (m *Rename) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.SrcParent = d.U32()
	m.SrcName = d.String()
	m.DstParent = d.U32()
	m.DstName = d.String()
	return d.Err()
}
