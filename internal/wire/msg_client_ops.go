package wire

// More client-master messages (see msg_client.go for the conventions):
// the queries with replies of their own, open files, goals.

// ReadLink asks for a symlink's target. Answered by LinkTarget.
type ReadLink struct {
	ReqHeader
	Inode uint32
}

func (*ReadLink) Type() Type { return TypeReadLink }
func (m *ReadLink) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
}
func (m *ReadLink) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	return d.Err()
}

// LinkTarget answers ReadLink.
type LinkTarget struct {
	Target string
}

func (*LinkTarget) Type() Type      { return TypeLinkTarget }
func (m *LinkTarget) Encode(e *Enc) { e.String(m.Target) }
func (m *LinkTarget) Decode(d *Dec) error {
	m.Target = d.String()
	return d.Err()
}

// ReadDir lists a directory one page at a time, in name order, without
// "." and "..". A page holds the names after After (empty: from the
// start), at most Max of them (0: the master's default); the next page
// starts after the last name received. Paging by name rather than by
// position means entries added or removed between pages neither repeat
// nor hide the others. Answered by DirPage.
type ReadDir struct {
	ReqHeader
	Inode uint32
	After string
	Max   uint32
}

func (*ReadDir) Type() Type { return TypeReadDir }
func (m *ReadDir) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.String(m.After)
	e.U32(m.Max)
}
func (m *ReadDir) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.After = d.String()
	m.Max = d.U32()
	return d.Err()
}

// DirEntry is one name of a DirPage with its inode's attributes, so that
// readdirplus needs no lookups.
type DirEntry struct {
	Name string
	Attr Attr
}

// DirPage answers ReadDir. More says whether names follow the last one.
type DirPage struct {
	Entries []DirEntry
	More    bool
}

func (*DirPage) Type() Type { return TypeDirPage }
func (m *DirPage) Encode(e *Enc) {
	e.Uvarint(uint64(len(m.Entries)))
	for i := range m.Entries {
		e.String(m.Entries[i].Name)
		m.Entries[i].Attr.encode(e)
	}
	e.Bool(m.More)
}
func (m *DirPage) Decode(d *Dec) error {
	n := d.Uvarint()
	// Each entry takes at least attrSize+1 bytes, so a forged count
	// cannot make the decoder allocate more than the payload justifies.
	if d.Err() == nil && n > uint64(d.Remaining()/(attrSize+1)) {
		d.Fail("%d entries cannot fit in %d bytes", n, d.Remaining())
	}
	m.Entries = nil
	if d.Err() == nil && n > 0 {
		m.Entries = make([]DirEntry, n)
		for i := range m.Entries {
			m.Entries[i].Name = d.String()
			m.Entries[i].Attr.decode(d)
		}
	}
	m.More = d.Bool()
	return d.Err()
}

// ReadDirNames asks, like ReadDir, for the names after After, with each
// one's inode and type only (since protocol 2): what a plain readdir
// needs, at a third of the bytes and none of the master's attribute
// lookups. Its fields are ReadDir's. Answered by DirNames.
type ReadDirNames ReadDir

func (*ReadDirNames) Type() Type            { return TypeReadDirNames }
func (m *ReadDirNames) Encode(e *Enc)       { (*ReadDir)(m).Encode(e) }
func (m *ReadDirNames) Decode(d *Dec) error { return (*ReadDir)(m).Decode(d) }

// DirName is one name of a DirNames page.
type DirName struct {
	Name     string
	Inode    uint32
	NodeType uint8
}

// DirNames answers ReadDirNames. More says whether names follow the
// last one.
type DirNames struct {
	Entries []DirName
	More    bool
}

// dirNameMin is the fewest bytes an encoded DirName takes.
const dirNameMin = 1 + 4 + 1

func (*DirNames) Type() Type { return TypeDirNames }
func (m *DirNames) Encode(e *Enc) {
	e.Uvarint(uint64(len(m.Entries)))
	for i := range m.Entries {
		e.String(m.Entries[i].Name)
		e.U32(m.Entries[i].Inode)
		e.U8(m.Entries[i].NodeType)
	}
	e.Bool(m.More)
}
func (m *DirNames) Decode(d *Dec) error {
	n := d.Uvarint()
	// A forged count cannot make the decoder allocate more than the
	// payload justifies.
	if d.Err() == nil && n > uint64(d.Remaining()/dirNameMin) {
		d.Fail("%d entries cannot fit in %d bytes", n, d.Remaining())
	}
	m.Entries = nil
	if d.Err() == nil && n > 0 {
		m.Entries = make([]DirName, n)
		for i := range m.Entries {
			m.Entries[i].Name = d.String()
			m.Entries[i].Inode = d.U32()
			m.Entries[i].NodeType = d.U8()
		}
	}
	m.More = d.Bool()
	return d.Err()
}

// GetXattr asks for one extended attribute. Answered by XattrValue, or
// ENODATA.
type GetXattr struct {
	ReqHeader
	Inode uint32
	Name  string
}

func (*GetXattr) Type() Type { return TypeGetXattr }
func (m *GetXattr) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.String(m.Name)
}
func (m *GetXattr) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Name = d.String()
	return d.Err()
}

// XattrValue answers GetXattr.
type XattrValue struct {
	Value []byte
}

func (*XattrValue) Type() Type      { return TypeXattrValue }
func (m *XattrValue) Encode(e *Enc) { e.Bytes(m.Value) }
func (m *XattrValue) Decode(d *Dec) error {
	m.Value = d.Bytes()
	return d.Err()
}

// ListXattr asks for the names of an inode's extended attributes.
// Answered by XattrNames.
type ListXattr struct {
	ReqHeader
	Inode uint32
}

func (*ListXattr) Type() Type { return TypeListXattr }
func (m *ListXattr) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
}
func (m *ListXattr) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	return d.Err()
}

// XattrNames answers ListXattr, names sorted.
type XattrNames struct {
	Names []string
}

func (*XattrNames) Type() Type { return TypeXattrNames }
func (m *XattrNames) Encode(e *Enc) {
	e.Uvarint(uint64(len(m.Names)))
	for _, s := range m.Names {
		e.String(s)
	}
}
func (m *XattrNames) Decode(d *Dec) error {
	n := d.Uvarint()
	if d.Err() == nil && n > uint64(d.Remaining()) {
		d.Fail("%d names cannot fit in %d bytes", n, d.Remaining())
	}
	m.Names = nil
	if d.Err() == nil && n > 0 {
		m.Names = make([]string, n)
		for i := range m.Names {
			m.Names[i] = d.String()
		}
	}
	return d.Err()
}

// SetXattr sets an extended attribute; Flags as setxattr(2) (1 create,
// 2 replace). Answered by Ok.
type SetXattr struct {
	ReqHeader
	Inode uint32
	Name  string
	Value []byte
	Flags uint8
}

func (*SetXattr) Type() Type { return TypeSetXattr }
func (m *SetXattr) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.String(m.Name)
	e.Bytes(m.Value)
	e.U8(m.Flags)
}
func (m *SetXattr) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Name = d.String()
	m.Value = d.Bytes()
	m.Flags = d.U8()
	return d.Err()
}

// RemoveXattr removes an extended attribute. Answered by Ok.
type RemoveXattr struct {
	ReqHeader
	Inode uint32
	Name  string
}

func (*RemoveXattr) Type() Type { return TypeRemoveXattr }
func (m *RemoveXattr) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.String(m.Name)
}
func (m *RemoveXattr) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Name = d.String()
	return d.Err()
}

// StatFS asks for the file system's totals. Answered by FSStats.
type StatFS struct {
	ReqHeader
}

func (*StatFS) Type() Type      { return TypeStatFS }
func (m *StatFS) Encode(e *Enc) { m.encodeHdr(e) }
func (m *StatFS) Decode(d *Dec) error {
	m.decodeHdr(d)
	return d.Err()
}

// FSStats answers StatFS. Space comes from the chunkservers' reports; a
// master without chunkservers reports 0.
type FSStats struct {
	TotalSpace uint64 // bytes
	AvailSpace uint64 // bytes
	Files      uint64 // inodes other than directories
	Dirs       uint64
}

func (*FSStats) Type() Type { return TypeFSStats }
func (m *FSStats) Encode(e *Enc) {
	e.U64(m.TotalSpace)
	e.U64(m.AvailSpace)
	e.U64(m.Files)
	e.U64(m.Dirs)
}
func (m *FSStats) Decode(d *Dec) error {
	m.TotalSpace = d.U64()
	m.AvailSpace = d.U64()
	m.Files = d.U64()
	m.Dirs = d.U64()
	return d.Err()
}

// Open records that the session holds a file open, so that its data
// outlives its last name until Release. Flags are open(2)'s: on a
// read-only export, opening for writing or truncation fails with EROFS.
// Answered by Entry, fresh attributes for the kernel's page cache.
type Open struct {
	ReqHeader
	Inode uint32
	Flags uint32
}

func (*Open) Type() Type { return TypeOpen }
func (m *Open) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U32(m.Flags)
}
func (m *Open) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Flags = d.U32()
	return d.Err()
}

// Release drops one Open of a file. Answered by Ok.
type Release struct {
	ReqHeader
	Inode uint32
}

func (*Release) Type() Type { return TypeRelease }
func (m *Release) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
}
func (m *Release) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	return d.Err()
}

// SetGoal sets the number of copies of a file's chunks, or the goal a
// directory gives what is created in it. Answered by Entry.
type SetGoal struct {
	ReqHeader
	Inode uint32
	Goal  uint8
}

func (*SetGoal) Type() Type { return TypeSetGoal }
func (m *SetGoal) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
	e.U8(m.Goal)
}
func (m *SetGoal) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	m.Goal = d.U8()
	return d.Err()
}

// GetGoal asks for an inode's goal. Answered by Entry, whose Attr.Goal
// is the answer: one reply type fewer, and the attributes are fresh too.
type GetGoal struct {
	ReqHeader
	Inode uint32
}

func (*GetGoal) Type() Type { return TypeGetGoal }
func (m *GetGoal) Encode(e *Enc) {
	m.encodeHdr(e)
	e.U32(m.Inode)
}
func (m *GetGoal) Decode(d *Dec) error {
	m.decodeHdr(d)
	m.Inode = d.U32()
	return d.Err()
}
