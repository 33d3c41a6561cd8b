package wire

// This file holds the data path's messages:
//
//   - client and master (types 132-149): where a chunk's copies are, and
//     write leases. A client reads a chunk by asking ChunkRead, then reads
//     from any listed copy. To write it asks ChunkWrite: the master locks
//     the chunk for the session, creates it or raises its version on
//     every copy it can reach, and answers the chain of copies; the client
//     writes along the chain and ends the lease with ChunkWriteEnd, giving
//     the file's new length. Lock and GetLock are advisory file locks
//     (flock and POSIX), held by the master for the session.
//   - client or chunkserver to chunkserver, the data port 9422 (types
//     400-449): CSRead, CSWrite and CSSync. A write goes to the first
//     server of the chain, which stores it and forwards it to the rest;
//     it is answered Ok only when every server of the chain has it.
//   - master to chunkserver, CSReplicate (type 214): make a copy of a
//     chunk by reading it from another server's data port.

// ChunkInfo answers ChunkRead and ChunkWrite: the file's length, the
// chunk and its version, and the data addresses of its copies. For a
// write, Servers is the chain in the order to write it; for a read, the
// valid copies in no particular order. ID 0 is a hole (reads as zeros,
// only for ChunkRead).
type ChunkInfo struct {
	Length  uint64 // the file's length
	ID      uint64
	Version uint32
	Servers []string
}

func (*ChunkInfo) Type() Type { return TypeChunkInfo }
func (m *ChunkInfo) Encode(e *Enc) {
	e.U64(m.Length)
	e.U64(m.ID)
	e.U32(m.Version)
	encStrings(e, m.Servers)
}
func (m *ChunkInfo) Decode(d *Dec) error {
	m.Length = d.U64()
	m.ID = d.U64()
	m.Version = d.U32()
	m.Servers = decStrings(d, "servers")
	return d.Err()
}

// ChunkRead asks where chunk Index (the file's offset / 64 MiB) of a file
// is stored. Answered by ChunkInfo.
type ChunkRead struct {
	ReqHeader
	Inode uint32
	Index uint32
}

func (*ChunkRead) Type() Type { return TypeChunkRead }
func (m *ChunkRead) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U32(m.Index)
}
func (m *ChunkRead) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Index = d.U32()
	return d.Err()
}

// ChunkWrite asks for a write lease on chunk Index of a file: the chunk
// is created if missing, or gets a new version on every copy, and stays
// locked for the session until ChunkWriteEnd or until the session's
// lease time passes. A session that already holds the lease gets it
// again unchanged. Another session's lease gives EBUSY (retry later).
// Answered by ChunkInfo with the chain.
type ChunkWrite struct {
	ReqHeader
	Inode uint32
	Index uint32
}

func (*ChunkWrite) Type() Type { return TypeChunkWrite }
func (m *ChunkWrite) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U32(m.Index)
}
func (m *ChunkWrite) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Index = d.U32()
	return d.Err()
}

// ChunkWriteEnd ends a write lease. Length is the file's length after
// the writes (the master never shrinks a file for it; 0 leaves the
// length). Bad lists the servers of the chain that failed a write: their
// copies may have missed data, so the master drops them and makes new
// copies from the others. A client that goes on writing after a failure
// ends the lease with Bad, takes a new one (whose chain leaves the bad
// servers out) and writes again what was not acknowledged. Answered by
// Ok.
type ChunkWriteEnd struct {
	ReqHeader
	Inode  uint32
	ID     uint64
	Length uint64
	Bad    []string
}

func (*ChunkWriteEnd) Type() Type { return TypeChunkWriteEnd }
func (m *ChunkWriteEnd) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U64(m.ID)
	e.U64(m.Length)
	encStrings(e, m.Bad)
}
func (m *ChunkWriteEnd) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.ID = d.U64()
	m.Length = d.U64()
	m.Bad = decStrings(d, "bad servers")
	return d.Err()
}

// Lock kinds and types, for Lock and GetLock.
const (
	LockPOSIX = 1 // fcntl(2) byte-range locks
	LockFlock = 2 // flock(2) whole-file locks

	LockRead   = 1 // F_RDLCK, LOCK_SH
	LockWrite  = 2 // F_WRLCK, LOCK_EX
	LockUnlock = 3 // F_UNLCK, LOCK_UN
)

// Lock takes or drops an advisory lock on a file for Owner, a number
// the client gives each lock owner (the kernel's lock owner). A POSIX
// lock covers bytes Start to End inclusive (End = 1<<64-1: to the end of
// the file); a flock lock the whole file. A lock that conflicts with
// another owner's gives EAGAIN; the client retries when the caller
// waits. Answered by Ok.
type Lock struct {
	ReqHeader
	Inode      uint32
	Owner      uint64
	Kind       uint8
	LockType   uint8
	Start, End uint64
	PID        uint32
}

func (*Lock) Type() Type { return TypeLock }
func (m *Lock) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U64(m.Owner)
	e.U8(m.Kind)
	e.U8(m.LockType)
	e.U64(m.Start)
	e.U64(m.End)
	e.U32(m.PID)
}
func (m *Lock) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Owner = d.U64()
	m.Kind = d.U8()
	m.LockType = d.U8()
	m.Start = d.U64()
	m.End = d.U64()
	m.PID = d.U32()
	return d.Err()
}

// GetLock asks which lock, if any, would conflict with the POSIX lock
// described (F_GETLK). Answered by LockInfo, LockType LockUnlock when
// none would.
type GetLock struct {
	ReqHeader
	Inode      uint32
	Owner      uint64
	LockType   uint8
	Start, End uint64
}

func (*GetLock) Type() Type { return TypeGetLock }
func (m *GetLock) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U64(m.Owner)
	e.U8(m.LockType)
	e.U64(m.Start)
	e.U64(m.End)
}
func (m *GetLock) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Owner = d.U64()
	m.LockType = d.U8()
	m.Start = d.U64()
	m.End = d.U64()
	return d.Err()
}

// LockInfo answers GetLock with the conflicting lock.
type LockInfo struct {
	LockType   uint8
	Start, End uint64
	PID        uint32
}

func (*LockInfo) Type() Type { return TypeLockInfo }
func (m *LockInfo) Encode(e *Enc) {
	e.U8(m.LockType)
	e.U64(m.Start)
	e.U64(m.End)
	e.U32(m.PID)
}
func (m *LockInfo) Decode(d *Dec) error {
	m.LockType = d.U8()
	m.Start = d.U64()
	m.End = d.U64()
	m.PID = d.U32()
	return d.Err()
}

// CSReplicate tells a chunkserver to make its own copy of a chunk at
// Version by reading it from one of Sources (data addresses, tried in
// order). The chunkserver answers Ok once its copy is complete and
// synced; a copy it already has at that version is Ok at once.
type CSReplicate struct {
	ID      uint64
	Version uint32
	Sources []string
}

func (*CSReplicate) Type() Type { return TypeCSReplicate }
func (m *CSReplicate) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
	encStrings(e, m.Sources)
}
func (m *CSReplicate) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	m.Sources = decStrings(d, "sources")
	return d.Err()
}

// CSRead reads Size bytes at Offset of a chunk copy, which must have
// Version (else ESTALE; a missing copy gives ENOENT). Every 64 KiB block
// touched is checked against its CRC first: a damaged block gives EBADMSG
// and the chunkserver reports the copy to the master. Answered by CSData,
// whose Data is shorter than Size where the copy's data ends (the rest
// reads as zeros). Size is at most CSMaxIO.
type CSRead struct {
	ID      uint64
	Version uint32
	Offset  uint32
	Size    uint32
}

// CSMaxIO bounds the data of one CSRead or CSWrite: 4 MiB.
const CSMaxIO = 4 << 20

func (*CSRead) Type() Type { return TypeCSRead }
func (m *CSRead) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
	e.U32(m.Offset)
	e.U32(m.Size)
}
func (m *CSRead) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	m.Offset = d.U32()
	m.Size = d.U32()
	return d.Err()
}

// CSData answers CSRead.
type CSData struct {
	Data []byte
}

func (*CSData) Type() Type      { return TypeCSData }
func (m *CSData) Encode(e *Enc) { e.Bytes(m.Data) }

// Size lets a FrameWriter reserve room for the data (see Sizer).
func (m *CSData) Size() int { return bytesSize(m.Data) }
func (m *CSData) Decode(d *Dec) error {
	m.Data = d.Bytes()
	return d.Err()
}

// CSWrite writes Data at Offset of a chunk copy, which must have Version,
// and forwards the same write to Chain[0] with the rest of the chain.
// It is answered Ok only when this copy and every copy down the chain
// have the data; otherwise Error, whose message names the server that
// failed.
type CSWrite struct {
	ID      uint64
	Version uint32
	Offset  uint32
	Data    []byte
	Chain   []string
}

func (*CSWrite) Type() Type { return TypeCSWrite }
func (m *CSWrite) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
	e.U32(m.Offset)
	e.Bytes(m.Data)
	encStrings(e, m.Chain)
}

// Size lets a FrameWriter reserve room for the data (see Sizer).
func (m *CSWrite) Size() int {
	n := 8 + 4 + 4 + bytesSize(m.Data) + uvarintLen(uint64(len(m.Chain)))
	for _, s := range m.Chain {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n
}

func (m *CSWrite) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	m.Offset = d.U32()
	m.Data = d.Bytes()
	m.Chain = decStrings(d, "chain")
	return d.Err()
}

// CSSync makes a chunk copy durable (fsync) here and down Chain, as
// CSWrite. Answered by Ok.
type CSSync struct {
	ID      uint64
	Version uint32
	Chain   []string
}

func (*CSSync) Type() Type { return TypeCSSync }
func (m *CSSync) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
	encStrings(e, m.Chain)
}
func (m *CSSync) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	m.Chain = decStrings(d, "chain")
	return d.Err()
}

// encStrings writes a uvarint count, then each string.
func encStrings(e *Enc, ss []string) {
	e.Uvarint(uint64(len(ss)))
	for _, s := range ss {
		e.String(s)
	}
}

// decStrings reads what encStrings wrote. A forged count cannot make it
// allocate more than the payload holds; an empty list is nil.
func decStrings(d *Dec, what string) []string {
	n := d.Uvarint()
	if d.Err() == nil && n > uint64(d.Remaining()) {
		d.Fail("%d %s cannot fit in %d bytes", n, what, d.Remaining())
	}
	if d.Err() != nil || n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.String()
	}
	return ss
}
