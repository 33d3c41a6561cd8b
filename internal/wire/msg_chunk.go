package wire

// This file holds the messages between a chunkserver and the master on
// port 9420, types 200-299. The chunkserver dials; after the handshake it
// registers (CSRegister, then its chunk list in CSRegisterChunks pages,
// then CSRegisterDone), heartbeats, and reports damaged and lost chunks.
// The master's commands (CSCreate, CSDelete, CSSetVersion, CSTruncate)
// ride back on the same connection as requests of their own. Every
// request either way is answered by Ok or Error; Error's errno says what
// failed (docs/PROTOCOL.md, "Chunkserver and master").

// CSRegister starts a chunkserver's registration: where clients reach
// its data port, its placement labels, its space, and how many chunks the
// following CSRegisterChunks pages carry, so the master can tell a
// complete list from a cut one.
type CSRegister struct {
	// Addr is host:port of the data port. An empty or unspecified host
	// (":9422", "0.0.0.0:9422") means the address the connection comes
	// from.
	Addr       string
	DataCenter string
	Rack       string
	Total      uint64 // bytes on all disks, as chunkstore.DiskStatus.Total
	Used       uint64
	Free       uint64
	ChunkCount uint64 // chunks in the pages that follow
}

func (*CSRegister) Type() Type { return TypeCSRegister }

func (m *CSRegister) Encode(e *Enc) {
	e.String(m.Addr)
	e.String(m.DataCenter)
	e.String(m.Rack)
	e.U64(m.Total)
	e.U64(m.Used)
	e.U64(m.Free)
	e.U64(m.ChunkCount)
}

func (m *CSRegister) Decode(d *Dec) error {
	m.Addr = d.String()
	m.DataCenter = d.String()
	m.Rack = d.String()
	m.Total = d.U64()
	m.Used = d.U64()
	m.Free = d.U64()
	m.ChunkCount = d.U64()
	return d.Err()
}

// CSChunk is one chunk copy a chunkserver holds. It is a field of
// messages, not a message.
type CSChunk struct {
	ID      uint64
	Version uint32
	Length  uint32 // bytes of data
	Damaged bool   // a block or the header failed its checksum
}

// csChunkSize is the encoded size of a CSChunk: 8+4+4+1.
const csChunkSize = 17

// CSRegisterChunks is one page of a registering chunkserver's chunks.
// Chunk lists run to millions, so they travel in pages of a few thousand
// (CSRegisterPage), each well under the frame limit.
type CSRegisterChunks struct {
	Chunks []CSChunk
}

// CSRegisterPage is how many chunks a chunkserver puts in one page: 68
// KiB of payload.
const CSRegisterPage = 4096

func (*CSRegisterChunks) Type() Type { return TypeCSRegisterChunks }

func (m *CSRegisterChunks) Encode(e *Enc) {
	e.Uvarint(uint64(len(m.Chunks)))
	for _, c := range m.Chunks {
		e.U64(c.ID)
		e.U32(c.Version)
		e.U32(c.Length)
		e.Bool(c.Damaged)
	}
}

func (m *CSRegisterChunks) Decode(d *Dec) error {
	n := d.Uvarint()
	// A forged count cannot make the decoder allocate more than the
	// payload holds.
	if d.Err() == nil && n > uint64(d.Remaining()/csChunkSize) {
		d.Fail("%d chunks cannot fit in %d bytes", n, d.Remaining())
	}
	m.Chunks = nil
	if d.Err() == nil && n > 0 {
		m.Chunks = make([]CSChunk, n)
		for i := range m.Chunks {
			c := &m.Chunks[i]
			c.ID = d.U64()
			c.Version = d.U32()
			c.Length = d.U32()
			c.Damaged = d.Bool()
		}
	}
	return d.Err()
}

// CSRegisterDone ends a registration. The master then replaces what it
// knew of the server's chunks with the pages received, all at once, and
// answers Ok; if the pages did not carry CSRegister.ChunkCount chunks it
// answers Error (EPROTO) and the chunkserver starts over.
type CSRegisterDone struct{}

func (*CSRegisterDone) Type() Type          { return TypeCSRegisterDone }
func (*CSRegisterDone) Encode(*Enc)         {}
func (*CSRegisterDone) Decode(d *Dec) error { return d.Err() }

// CSHeartbeat tells the master the chunkserver is alive, with its space
// and counts. A master that hears nothing for its timeout marks the
// server down and forgets its copies.
type CSHeartbeat struct {
	Total, Used, Free uint64
	Chunks            uint64
	Damaged           uint64
}

func (*CSHeartbeat) Type() Type { return TypeCSHeartbeat }

func (m *CSHeartbeat) Encode(e *Enc) {
	e.U64(m.Total)
	e.U64(m.Used)
	e.U64(m.Free)
	e.U64(m.Chunks)
	e.U64(m.Damaged)
}

func (m *CSHeartbeat) Decode(d *Dec) error {
	m.Total = d.U64()
	m.Used = d.U64()
	m.Free = d.U64()
	m.Chunks = d.U64()
	m.Damaged = d.U64()
	return d.Err()
}

// CSChunkDamaged reports a copy found damaged (by a scrub or a read):
// the master stops counting it as a good copy.
type CSChunkDamaged struct {
	ID      uint64
	Version uint32
}

func (*CSChunkDamaged) Type() Type { return TypeCSChunkDamaged }

func (m *CSChunkDamaged) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
}

func (m *CSChunkDamaged) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	return d.Err()
}

// CSChunkLost reports a copy that is gone (its file vanished, its disk
// failed): the master forgets it.
type CSChunkLost struct {
	ID      uint64
	Version uint32
}

func (*CSChunkLost) Type() Type { return TypeCSChunkLost }

func (m *CSChunkLost) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
}

func (m *CSChunkLost) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	return d.Err()
}

// CSCreate tells a chunkserver to create an empty chunk.
type CSCreate struct {
	ID      uint64
	Version uint32
}

func (*CSCreate) Type() Type { return TypeCSCreate }

func (m *CSCreate) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
}

func (m *CSCreate) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	return d.Err()
}

// CSDelete tells a chunkserver to delete its copy of a chunk, which must
// have Version.
type CSDelete struct {
	ID      uint64
	Version uint32
}

func (*CSDelete) Type() Type { return TypeCSDelete }

func (m *CSDelete) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
}

func (m *CSDelete) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	return d.Err()
}

// CSSetVersion tells a chunkserver to change a copy's version from Old
// to New, as a write session or a version fix-up needs.
type CSSetVersion struct {
	ID       uint64
	Old, New uint32
}

func (*CSSetVersion) Type() Type { return TypeCSSetVersion }

func (m *CSSetVersion) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Old)
	e.U32(m.New)
}

func (m *CSSetVersion) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Old = d.U32()
	m.New = d.U32()
	return d.Err()
}

// CSTruncate tells a chunkserver to set a copy's length.
type CSTruncate struct {
	ID      uint64
	Version uint32
	Length  uint32 // at most the chunk size, 64 MiB
}

func (*CSTruncate) Type() Type { return TypeCSTruncate }

func (m *CSTruncate) Encode(e *Enc) {
	e.U64(m.ID)
	e.U32(m.Version)
	e.U32(m.Length)
}

func (m *CSTruncate) Decode(d *Dec) error {
	m.ID = d.U64()
	m.Version = d.U32()
	m.Length = d.U32()
	return d.Err()
}
