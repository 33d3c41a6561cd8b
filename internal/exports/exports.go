// Package exports reads mfsexports.cfg, the master's list of who may
// mount what, in MooseFS's format, and answers which line admits a
// client.
//
// One export a line, `#` starting a comment:
//
//	ADDRESS  DIRECTORY  [OPTIONS]
//
// ADDRESS is `*` (everyone), an address (`10.0.0.5`), a network by prefix
// length or netmask (`10.0.0.0/24`, `10.0.0.0/255.255.255.0`) or an
// inclusive range (`10.0.0.5-10.0.0.9`); IPv6 addresses work in the
// same forms. DIRECTORY is `/` or an absolute path in the file system; `.`
// (MooseFS's meta file system) is refused as unsupported. OPTIONS are
// comma separated:
//
//	ro, readonly          read-only (the default, as in MooseFS)
//	rw, readwrite         read-write
//	alldirs               any subdirectory of DIRECTORY may be mounted too
//	maproot=USER[:GROUP]  requests by uid 0 run as USER:GROUP (default 999:999)
//	mapall=USER[:GROUP]   requests by every other uid run as USER:GROUP
//	password=PASS         the mount must prove PASS (see wire.SessionProof)
//	dynamicip             a session may be resumed from another address
//	mingoal=N, maxgoal=N  goals users may set, 1-9
//	ignoregid, admin, minversion=V, mintrashtime=T, maxtrashtime=T
//	                      checked and kept, not used yet
//
// USER and GROUP are numbers or names resolved on the master; without
// GROUP, USER's primary group is used (the number itself for a uid the
// master does not know). Unlike MooseFS, which skips lines it cannot
// read, every mistake is an error naming the file and line: a typo in
// an access list must not silently open or close a door.
//
// The first line that matches the client's address and path wins.
// Without a file the master exports everything to everyone as
// `* / rw,alldirs,maproot=0` (Default), so a single-host cluster needs
// no file.
package exports

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"strings"
)

// ErrSyntax is wrapped by every error about a file's content.
var ErrSyntax = errors.New("bad exports")

// Cred is a uid and gid.
type Cred struct {
	UID, GID uint32
}

// Export is one line of the file.
type Export struct {
	Line     int    // line number, for logs and refusals
	Text     string // the line as written, without its comment
	From     Addrs
	Path     string // cleaned, absolute
	ReadOnly bool
	AllDirs  bool
	// MapRoot applies to uid 0, MapAll to every other uid; nil maps
	// nothing.
	MapRoot, MapAll *Cred
	Password        string // empty: none needed
	DynamicIP       bool
	IgnoreGID       bool
	Admin           bool
	MinGoal         uint8 // 1 unless set
	MaxGoal         uint8 // 9 unless set
	MinVersion      string
	// MinTrash and MaxTrash are in seconds; carpfs has no trash yet.
	MinTrash, MaxTrash uint64
}

// Table is a parsed exports file.
type Table struct {
	Name    string // the file's path, for messages
	Exports []Export
}

// DefaultLine is the export used when there is no file.
const DefaultLine = "* / rw,alldirs,maproot=0"

// Default returns the table used when there is no file: everything to
// everyone, read-write, root not mapped.
func Default() *Table {
	t, err := Parse(strings.NewReader(DefaultLine), "(default exports)")
	if err != nil {
		panic(err) // a constant that parses: covered by the tests
	}
	return t
}

// Load reads the exports file at p; a missing file gives Default.
func Load(p string) (*Table, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("exports: %w", err)
	}
	defer f.Close()
	return Parse(f, p)
}

// maxLine bounds a line, so a binary file given by mistake fails fast.
const maxLine = 16 << 10

// Parse reads an exports file from r; name is used in errors.
func Parse(r io.Reader, name string) (*Table, error) {
	t := &Table{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1024), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", ErrSyntax, name, n, err)
		}
		e.Line, e.Text = n, line
		t.Exports = append(t.Exports, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSyntax, name, err)
	}
	return t, nil
}

func parseLine(line string) (Export, error) {
	e := Export{ReadOnly: true, MinGoal: 1, MaxGoal: 9, MapRoot: &Cred{999, 999}}
	fields := strings.Fields(line)
	if len(fields) < 2 || len(fields) > 3 {
		return e, fmt.Errorf("want ADDRESS DIRECTORY [OPTIONS], got %d fields", len(fields))
	}
	var err error
	if e.From, err = ParseAddrs(fields[0]); err != nil {
		return e, err
	}
	switch dir := fields[1]; {
	case dir == ".":
		return e, errors.New(`directory "." (the meta file system) is not supported by carpfs`)
	case !strings.HasPrefix(dir, "/"):
		return e, fmt.Errorf("directory %q: want / or an absolute path", dir)
	default:
		e.Path = path.Clean(dir)
	}
	if len(fields) == 3 {
		if err := parseOptions(&e, fields[2]); err != nil {
			return e, err
		}
	}
	if e.MinGoal > e.MaxGoal {
		return e, fmt.Errorf("mingoal=%d is above maxgoal=%d", e.MinGoal, e.MaxGoal)
	}
	if e.MinTrash > e.MaxTrash && e.MaxTrash != 0 {
		return e, errors.New("mintrashtime is above maxtrashtime")
	}
	return e, nil
}

// Match returns the first export that admits a client at addr mounting
// dir (an absolute path), or false.
func (t *Table) Match(addr netip.Addr, dir string) (*Export, bool) {
	addr = addr.Unmap()
	dir = path.Clean("/" + dir)
	for i := range t.Exports {
		e := &t.Exports[i]
		if e.From.Contains(addr) && e.Covers(dir) {
			return e, true
		}
	}
	return nil, false
}

// Covers reports whether the export lets dir be mounted: dir is the
// exported directory, or with alldirs a directory below it.
func (e *Export) Covers(dir string) bool {
	if dir == e.Path {
		return true
	}
	if !e.AllDirs {
		return false
	}
	return e.Path == "/" || strings.HasPrefix(dir, e.Path+"/")
}

// Map returns the credentials a request by uid:gid runs with under this
// export: maproot for uid 0, mapall for the others, else unchanged.
func (e *Export) Map(uid, gid uint32) (uint32, uint32) {
	m := e.MapAll
	if uid == 0 {
		m = e.MapRoot
	}
	if m == nil {
		return uid, gid
	}
	return m.UID, m.GID
}

// GoalAllowed reports whether users of this export may set goal g.
func (e *Export) GoalAllowed(g uint8) bool { return g >= e.MinGoal && g <= e.MaxGoal }
