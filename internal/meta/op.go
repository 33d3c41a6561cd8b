package meta

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
)

// Entry is one changelog entry: a mutation at a version, under a term, at a
// time, with the result the master saw when it applied it.
type Entry struct {
	Version uint64 // +1 per entry, no gaps
	Term    uint64 // term of the master that wrote it
	Time    uint32 // unix seconds; the only clock Apply ever reads
	Op      Op
	Result  Result
}

// Result is what an operation produced. Failed operations change nothing and
// are never logged, so a logged Result is always a success with up to two
// values (a new inode, a chunk id and version, a session id).
type Result struct {
	Err syscall.Errno
	N   uint8 // number of values used in Val
	Val [2]uint64
}

func ok0() Result                    { return Result{} }
func ok1(a uint64) Result            { return Result{N: 1, Val: [2]uint64{a}} }
func ok2(a, b uint64) Result         { return Result{N: 2, Val: [2]uint64{a, b}} }
func fail(e syscall.Errno) Result    { return Result{Err: e} }
func (r Result) Ok() bool            { return r.Err == 0 }
func (r Result) Equal(o Result) bool { return r == o }

func (r Result) String() string {
	if r.Err != 0 {
		return "error " + ErrnoName(r.Err)
	}
	switch r.N {
	case 0:
		return "ok"
	case 1:
		return fmt.Sprintf("ok %d", r.Val[0])
	default:
		return fmt.Sprintf("ok %d,%d", r.Val[0], r.Val[1])
	}
}

// ArgWriter receives an operation's arguments in order. The changelog codec
// implements it; meta only decides what the arguments are.
type ArgWriter interface {
	Uint(v uint64)
	String(s string)
}

// ArgReader yields an operation's arguments in the order ArgWriter got them.
// After the first failure every call returns a zero value and Err reports it.
type ArgReader interface {
	Uint() uint64
	String() string
	Err() error
}

// Op is one metadata mutation. Its arguments are everything Apply needs
// besides the state and the entry's time, so replay is deterministic.
type Op interface {
	OpName() string
	EncodeArgs(w ArgWriter)
	decodeArgs(r ArgReader)
	apply(s *State, t uint32) Result
}

// ErrUnknownOp is returned by DecodeOp for a name no version of carpfs wrote.
var ErrUnknownOp = errors.New("unknown operation")

// DecodeOp builds the operation called name from its arguments.
func DecodeOp(name string, r ArgReader) (Op, error) {
	var od OpDecoder
	return od.Decode([]byte(name), r)
}

// OpDecoder decodes operations, reusing its scratch space between calls so
// a replay allocates only the operations themselves. The zero value is
// ready; it is not safe for concurrent use.
type OpDecoder struct{ d argDecoder }

// Decode builds the operation called name from its arguments.
func (od *OpDecoder) Decode(name []byte, r ArgReader) (Op, error) {
	op := newOp(name)
	if op == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownOp, name)
	}
	od.d = argDecoder{r: r}
	op.decodeArgs(&od.d)
	err := od.d.Err()
	od.d = argDecoder{}
	if err != nil {
		return nil, fmt.Errorf("%s arguments: %w", name, err)
	}
	return op, nil
}

// newOp returns an empty operation of the named kind, or nil.
func newOp(name []byte) Op {
	switch string(name) {
	case "CREATE":
		return &Create{}
	case "OPEN":
		return &Open{}
	case "RELEASE":
		return &Release{}
	case "WRITE":
		return &Write{}
	case "UNLOCK":
		return &Unlock{}
	case "LENGTH":
		return &Length{}
	case "UNLINK":
		return &Unlink{}
	case "RENAME":
		return &Rename{}
	case "SETATTR":
		return &SetAttr{}
	case "TRUNCATE":
		return &Truncate{}
	case "LINK":
		return &Link{}
	case "SYMLINK":
		return &Symlink{}
	case "RMDIR":
		return &Rmdir{}
	case "SETXATTR":
		return &SetXattr{}
	case "RMXATTR":
		return &RemoveXattr{}
	case "SETGOAL":
		return &SetGoal{}
	case "SESSION":
		return &Session{}
	case "SESCLOSE":
		return &SessionClose{}
	case "TERM":
		return &TermStart{}
	}
	return nil
}

var opNames = []string{
	"SESSION", "SESCLOSE", "CREATE", "SYMLINK", "LINK", "UNLINK", "RMDIR", "RENAME", "SETATTR",
	"TRUNCATE", "SETXATTR", "RMXATTR", "SETGOAL", "OPEN", "RELEASE", "WRITE", "UNLOCK", "LENGTH",
	"TERM",
}

// OpNames lists every operation name DecodeOp knows.
func OpNames() []string { return slices.Clone(opNames) }

// Session registers a client session; the result is the new session id.
type Session struct{ Info string }

// SessionClose ends a session and releases every file it holds open.
type SessionClose struct{ ID uint64 }

// TermStart is the first entry a master writes in a new term. It changes
// nothing but the state's term: it gives the term an entry of its own, so
// that the entries the master carried over from older terms are committed
// together with one of its own, never on their own count (an entry of an
// older term stored on a majority can still be cut by a later master; one
// followed by a committed entry of a newer term cannot).
type TermStart struct{}

// Create makes a regular file, directory, fifo, socket or device node; the
// result is the new inode. Mode holds the permission bits only.
type Create struct {
	Parent   uint32
	Name     string
	Type     Type
	Mode     uint16
	UID, GID uint32
	Rdev     uint32
}

// Symlink makes a symbolic link; the result is the new inode.
type Symlink struct {
	Parent   uint32
	Name     string
	Target   string
	UID, GID uint32
}

// Link adds a hard link to a non-directory.
type Link struct {
	Inode  uint32
	Parent uint32
	Name   string
}

// Unlink removes a non-directory entry.
type Unlink struct {
	Parent uint32
	Name   string
}

// Rmdir removes an empty directory.
type Rmdir struct {
	Parent uint32
	Name   string
}

// Rename moves an entry, replacing a file or an empty directory at the
// destination as rename(2) does.
type Rename struct {
	SrcParent uint32
	SrcName   string
	DstParent uint32
	DstName   string
}

// SetAttr bits say which SetAttr fields apply.
const (
	SetMode  = 1 << 0
	SetUID   = 1 << 1
	SetGID   = 1 << 2
	SetAtime = 1 << 3
	SetMtime = 1 << 4
	setAll   = SetMode | SetUID | SetGID | SetAtime | SetMtime
)

// SetAttr changes mode, owner and times (chmod, chown, utimens); ctime is
// the entry's time.
type SetAttr struct {
	Inode        uint32
	Mask         uint8
	Mode         uint16
	UID, GID     uint32
	Atime, Mtime uint32
}

// Truncate sets a file's length; chunks past the end are released and the
// chunk holding the new end gets a new version (its tail is cut on disk).
type Truncate struct {
	Inode uint32
	Size  uint64
}

// Xattr set flags, as setxattr(2).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// SetXattr sets an extended attribute.
type SetXattr struct {
	Inode uint32
	Name  string
	Value string
	Flags uint8
}

// RemoveXattr removes an extended attribute.
type RemoveXattr struct {
	Inode uint32
	Name  string
}

// SetGoal sets the number of copies kept of a file's chunks, or the goal a
// directory passes to what is created in it.
type SetGoal struct {
	Inode uint32
	Goal  uint8
}

// Open records that a session holds a non-directory open, so an unlinked file keeps
// its data until the last holder releases it.
type Open struct {
	Session uint64
	Inode   uint32
}

// Release drops one open of a file by a session.
type Release struct {
	Session uint64
	Inode   uint32
}

// Write starts a write session on chunk Index of a file: a missing chunk is
// created, an existing one gets its version raised; the chunk stays locked
// until Unlock. The result is (chunk id, version).
type Write struct {
	Inode uint32
	Index uint32
}

// Unlock ends a write session on a chunk.
type Unlock struct{ Chunk uint64 }

// Length sets a file's length after a write, never below what writes made
// it; mtime is the entry's time.
type Length struct {
	Inode uint32
	Size  uint64
}

func (*Session) OpName() string      { return "SESSION" }
func (*SessionClose) OpName() string { return "SESCLOSE" }
func (*TermStart) OpName() string    { return "TERM" }
func (*Create) OpName() string       { return "CREATE" }
func (*Symlink) OpName() string      { return "SYMLINK" }
func (*Link) OpName() string         { return "LINK" }
func (*Unlink) OpName() string       { return "UNLINK" }
func (*Rmdir) OpName() string        { return "RMDIR" }
func (*Rename) OpName() string       { return "RENAME" }
func (*SetAttr) OpName() string      { return "SETATTR" }
func (*Truncate) OpName() string     { return "TRUNCATE" }
func (*SetXattr) OpName() string     { return "SETXATTR" }
func (*RemoveXattr) OpName() string  { return "RMXATTR" }
func (*SetGoal) OpName() string      { return "SETGOAL" }
func (*Open) OpName() string         { return "OPEN" }
func (*Release) OpName() string      { return "RELEASE" }
func (*Write) OpName() string        { return "WRITE" }
func (*Unlock) OpName() string       { return "UNLOCK" }
func (*Length) OpName() string       { return "LENGTH" }

func (o *Session) EncodeArgs(w ArgWriter)      { w.String(o.Info) }
func (o *SessionClose) EncodeArgs(w ArgWriter) { w.Uint(o.ID) }
func (*TermStart) EncodeArgs(ArgWriter)        {}
func (o *Create) EncodeArgs(w ArgWriter) {
	w.Uint(uint64(o.Parent))
	w.String(o.Name)
	w.String(o.Type.Letter())
	w.Uint(uint64(o.Mode))
	w.Uint(uint64(o.UID))
	w.Uint(uint64(o.GID))
	w.Uint(uint64(o.Rdev))
}
func (o *Symlink) EncodeArgs(w ArgWriter) {
	w.Uint(uint64(o.Parent))
	w.String(o.Name)
	w.String(o.Target)
	w.Uint(uint64(o.UID))
	w.Uint(uint64(o.GID))
}
func (o *Link) EncodeArgs(w ArgWriter) {
	w.Uint(uint64(o.Inode))
	w.Uint(uint64(o.Parent))
	w.String(o.Name)
}
func (o *Unlink) EncodeArgs(w ArgWriter) { w.Uint(uint64(o.Parent)); w.String(o.Name) }
func (o *Rmdir) EncodeArgs(w ArgWriter)  { w.Uint(uint64(o.Parent)); w.String(o.Name) }
func (o *Rename) EncodeArgs(w ArgWriter) {
	w.Uint(uint64(o.SrcParent))
	w.String(o.SrcName)
	w.Uint(uint64(o.DstParent))
	w.String(o.DstName)
}
func (o *SetAttr) EncodeArgs(w ArgWriter) {
	w.Uint(uint64(o.Inode))
	w.Uint(uint64(o.Mask))
	w.Uint(uint64(o.Mode))
	w.Uint(uint64(o.UID))
	w.Uint(uint64(o.GID))
	w.Uint(uint64(o.Atime))
	w.Uint(uint64(o.Mtime))
}
func (o *Truncate) EncodeArgs(w ArgWriter) { w.Uint(uint64(o.Inode)); w.Uint(o.Size) }
func (o *SetXattr) EncodeArgs(w ArgWriter) {
	w.Uint(uint64(o.Inode))
	w.String(o.Name)
	w.String(o.Value)
	w.Uint(uint64(o.Flags))
}
func (o *RemoveXattr) EncodeArgs(w ArgWriter) { w.Uint(uint64(o.Inode)); w.String(o.Name) }
func (o *SetGoal) EncodeArgs(w ArgWriter)     { w.Uint(uint64(o.Inode)); w.Uint(uint64(o.Goal)) }
func (o *Open) EncodeArgs(w ArgWriter)        { w.Uint(o.Session); w.Uint(uint64(o.Inode)) }
func (o *Release) EncodeArgs(w ArgWriter)     { w.Uint(o.Session); w.Uint(uint64(o.Inode)) }
func (o *Write) EncodeArgs(w ArgWriter)       { w.Uint(uint64(o.Inode)); w.Uint(uint64(o.Index)) }
func (o *Unlock) EncodeArgs(w ArgWriter)      { w.Uint(o.Chunk) }
func (o *Length) EncodeArgs(w ArgWriter)      { w.Uint(uint64(o.Inode)); w.Uint(o.Size) }

// argDecoder narrows the reader's values to the widths the ops use, turning
// an out-of-range number into a reader error instead of silent truncation.
type argDecoder struct {
	r   ArgReader
	err error
}

func (d *argDecoder) u(max uint64) uint64 {
	v := d.r.Uint()
	if d.err == nil && v > max {
		d.err = fmt.Errorf("value %d out of range (max %d)", v, max)
	}
	return v
}
func (d *argDecoder) u32() uint32    { return uint32(d.u(1<<32 - 1)) }
func (d *argDecoder) u16() uint16    { return uint16(d.u(1<<16 - 1)) }
func (d *argDecoder) u8() uint8      { return uint8(d.u(255)) }
func (d *argDecoder) u64() uint64    { return d.r.Uint() }
func (d *argDecoder) str() string    { return d.r.String() }
func (d *argDecoder) Uint() uint64   { return d.r.Uint() }
func (d *argDecoder) String() string { return d.r.String() }
func (d *argDecoder) Err() error {
	if err := d.r.Err(); err != nil {
		return err
	}
	return d.err
}
func (d *argDecoder) typ() Type {
	s := d.r.String()
	t, ok := TypeFromLetter(s)
	if !ok && d.err == nil && d.r.Err() == nil {
		d.err = fmt.Errorf("bad node type %q", s)
	}
	return t
}

// decodeArgs methods use decode(r) so range errors land in r.Err().
func decode(r ArgReader) *argDecoder {
	if d, ok := r.(*argDecoder); ok {
		return d
	}
	return &argDecoder{r: r}
}

func (o *Session) decodeArgs(r ArgReader)      { o.Info = r.String() }
func (o *SessionClose) decodeArgs(r ArgReader) { o.ID = r.Uint() }
func (*TermStart) decodeArgs(ArgReader)        {}
func (o *Create) decodeArgs(r ArgReader) {
	d := decode(r)
	o.Parent, o.Name, o.Type, o.Mode = d.u32(), d.str(), d.typ(), d.u16()
	o.UID, o.GID, o.Rdev = d.u32(), d.u32(), d.u32()
}
func (o *Symlink) decodeArgs(r ArgReader) {
	d := decode(r)
	o.Parent, o.Name, o.Target, o.UID, o.GID = d.u32(), d.str(), d.str(), d.u32(), d.u32()
}
func (o *Link) decodeArgs(r ArgReader) {
	d := decode(r)
	o.Inode, o.Parent, o.Name = d.u32(), d.u32(), d.str()
}
func (o *Unlink) decodeArgs(r ArgReader) { d := decode(r); o.Parent, o.Name = d.u32(), d.str() }
func (o *Rmdir) decodeArgs(r ArgReader)  { d := decode(r); o.Parent, o.Name = d.u32(), d.str() }
func (o *Rename) decodeArgs(r ArgReader) {
	d := decode(r)
	o.SrcParent, o.SrcName, o.DstParent, o.DstName = d.u32(), d.str(), d.u32(), d.str()
}
func (o *SetAttr) decodeArgs(r ArgReader) {
	d := decode(r)
	o.Inode, o.Mask, o.Mode, o.UID, o.GID = d.u32(), d.u8(), d.u16(), d.u32(), d.u32()
	o.Atime, o.Mtime = d.u32(), d.u32()
}
func (o *Truncate) decodeArgs(r ArgReader) { d := decode(r); o.Inode, o.Size = d.u32(), d.u64() }
func (o *SetXattr) decodeArgs(r ArgReader) {
	d := decode(r)
	o.Inode, o.Name, o.Value, o.Flags = d.u32(), d.str(), d.str(), d.u8()
}
func (o *RemoveXattr) decodeArgs(r ArgReader) { d := decode(r); o.Inode, o.Name = d.u32(), d.str() }
func (o *SetGoal) decodeArgs(r ArgReader)     { d := decode(r); o.Inode, o.Goal = d.u32(), d.u8() }
func (o *Open) decodeArgs(r ArgReader)        { d := decode(r); o.Session, o.Inode = d.u64(), d.u32() }
func (o *Release) decodeArgs(r ArgReader)     { d := decode(r); o.Session, o.Inode = d.u64(), d.u32() }
func (o *Write) decodeArgs(r ArgReader)       { d := decode(r); o.Inode, o.Index = d.u32(), d.u32() }
func (o *Unlock) decodeArgs(r ArgReader)      { o.Chunk = r.Uint() }
func (o *Length) decodeArgs(r ArgReader)      { d := decode(r); o.Inode, o.Size = d.u32(), d.u64() }
