package wire

// This file holds the messages between a metalogger and the master on
// port 9419, types 300-399. The metalogger dials; after the handshake the
// master asks it to accept its term (MLGrant), which the metalogger
// stores on disk before it answers with what it holds (MLState). The
// master then cuts a tail that is not part of its log (MLTruncate), or
// reads entries it lacks (MLFetch, answered by MLLines), and streams its
// changelog (MLAppend, one-way); the metalogger fsyncs what it receives
// and says how far it has (MLAck, one-way). A majority of acknowledged
// copies makes an entry committed; MLAppend carries the commit point so
// that metaloggers apply only committed entries to their replica
// (docs/PROTOCOL.md, "Metalogger and master").

// MLGrant asks a metalogger to accept Term for Holder: a metalogger
// accepts a term above every one it has accepted, or the very term it
// accepted for the same holder (a reconnect). It refuses any other with
// an Error (ESTALE) naming the term and holder it accepted, so a master
// that gets it knows it is not the current master.
type MLGrant struct {
	Term   uint64
	Holder string // who the term belongs to: the master's name and start
	Commit uint64 // the master's commit point so far
}

func (*MLGrant) Type() Type { return TypeMLGrant }

func (m *MLGrant) Encode(e *Enc) {
	e.U64(m.Term)
	e.String(m.Holder)
	e.U64(m.Commit)
}

func (m *MLGrant) Decode(d *Dec) error {
	m.Term = d.U64()
	m.Holder = d.String()
	m.Commit = d.U64()
	return d.Err()
}

// MLState is what a metalogger holds: the answer to MLGrant and
// MLTruncate.
type MLState struct {
	ID        string // the metalogger's identity, stable across restarts
	Term      uint64 // the highest term accepted
	Holder    string // whom Term was accepted for
	First     uint64 // oldest version in its changelog files; 0 if none
	Last      uint64 // newest version stored (fsynced)
	LastTerm  uint64 // the term of entry Last
	Committed uint64 // the highest commit point it has heard of
	Replica   uint64 // the version its metadata replica has reached
}

func (*MLState) Type() Type { return TypeMLState }

func (m *MLState) Encode(e *Enc) {
	e.String(m.ID)
	e.U64(m.Term)
	e.String(m.Holder)
	e.U64(m.First)
	e.U64(m.Last)
	e.U64(m.LastTerm)
	e.U64(m.Committed)
	e.U64(m.Replica)
}

func (m *MLState) Decode(d *Dec) error {
	m.ID = d.String()
	m.Term = d.U64()
	m.Holder = d.String()
	m.First = d.U64()
	m.Last = d.U64()
	m.LastTerm = d.U64()
	m.Committed = d.U64()
	m.Replica = d.U64()
	if d.Err() == nil && m.Last < m.Replica {
		d.Fail("replica version %d is past the last stored version %d", m.Replica, m.Last)
	}
	return d.Err()
}

// MLTruncate makes a metalogger drop every stored entry after After: a
// tail written under an older term that the current master's log does
// not have. After is never below the metalogger's Committed.
type MLTruncate struct {
	After uint64
}

func (*MLTruncate) Type() Type { return TypeMLTruncate }

func (m *MLTruncate) Encode(e *Enc) { e.U64(m.After) }

func (m *MLTruncate) Decode(d *Dec) error {
	m.After = d.U64()
	return d.Err()
}

// MLAppend streams entries: Lines holds whole changelog lines (the
// changelog package's text format, newline-terminated) continuing the
// metalogger's log; empty Lines is a heartbeat that only moves Commit.
// Term is the master's, checked against the accepted one.
type MLAppend struct {
	Term   uint64
	Commit uint64
	Lines  []byte
}

func (*MLAppend) Type() Type { return TypeMLAppend }

func (m *MLAppend) Encode(e *Enc) {
	e.U64(m.Term)
	e.U64(m.Commit)
	e.Bytes(m.Lines)
}

func (m *MLAppend) Decode(d *Dec) error {
	m.Term = d.U64()
	m.Commit = d.U64()
	m.Lines = d.Bytes()
	if d.Err() == nil && len(m.Lines) > 0 && m.Lines[len(m.Lines)-1] != '\n' {
		d.Fail("lines do not end with a newline")
	}
	return d.Err()
}

// MLAck says that every entry up to Version is on the metalogger's disk.
type MLAck struct {
	Version uint64
}

func (*MLAck) Type() Type { return TypeMLAck }

func (m *MLAck) Encode(e *Enc) { e.U64(m.Version) }

func (m *MLAck) Decode(d *Dec) error {
	m.Version = d.U64()
	return d.Err()
}

// MLFetch asks a metalogger for its stored entries from version From on,
// at most MaxBytes of lines (at least one whole line is always sent): a
// master starting up reads the entries a majority has and it lacks.
type MLFetch struct {
	From     uint64
	MaxBytes uint32
}

func (*MLFetch) Type() Type { return TypeMLFetch }

func (m *MLFetch) Encode(e *Enc) {
	e.U64(m.From)
	e.U32(m.MaxBytes)
}

func (m *MLFetch) Decode(d *Dec) error {
	m.From = d.U64()
	m.MaxBytes = d.U32()
	return d.Err()
}

// MLLines answers MLFetch: whole lines from the asked version on; empty
// when the metalogger holds nothing from there.
type MLLines struct {
	Lines []byte
}

func (*MLLines) Type() Type { return TypeMLLines }

func (m *MLLines) Encode(e *Enc) { e.Bytes(m.Lines) }

func (m *MLLines) Decode(d *Dec) error {
	m.Lines = d.Bytes()
	if d.Err() == nil && len(m.Lines) > 0 && m.Lines[len(m.Lines)-1] != '\n' {
		d.Fail("lines do not end with a newline")
	}
	return d.Err()
}

// MLDumpRead asks the master for part of its newest dump file: a
// metalogger that has none needs one to build its replica from. Version
// 0 asks for the newest; a later part names the version the first answer
// gave, and an answer for another version (the dump was replaced) starts
// the download over. The master refuses (EAGAIN) a dump newer than its
// commit point.
type MLDumpRead struct {
	Version uint64
	Offset  uint64
	Size    uint32
}

func (*MLDumpRead) Type() Type { return TypeMLDumpRead }

func (m *MLDumpRead) Encode(e *Enc) {
	e.U64(m.Version)
	e.U64(m.Offset)
	e.U32(m.Size)
}

func (m *MLDumpRead) Decode(d *Dec) error {
	m.Version = d.U64()
	m.Offset = d.U64()
	m.Size = d.U32()
	return d.Err()
}

// MLDumpData answers MLDumpRead: the dump's version and size, and the
// bytes from the asked offset (empty at the end).
type MLDumpData struct {
	Version uint64
	Total   uint64
	Data    []byte
}

func (*MLDumpData) Type() Type { return TypeMLDumpData }

func (m *MLDumpData) Encode(e *Enc) {
	e.U64(m.Version)
	e.U64(m.Total)
	e.Bytes(m.Data)
}

func (m *MLDumpData) Decode(d *Dec) error {
	m.Version = d.U64()
	m.Total = d.U64()
	m.Data = d.Bytes()
	if d.Err() == nil && uint64(len(m.Data)) > m.Total {
		d.Fail("%d bytes of a %d-byte dump", len(m.Data), m.Total)
	}
	return d.Err()
}
