package chunkstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/carpfs/carpfs/internal/config"
)

// DiskSpec is one disk of a chunkserver: a line of mfshdd.cfg.
type DiskSpec struct {
	// Path is the directory that holds the chunks, absolute and clean.
	Path string
	// MarkedForRemoval ('*'): the disk's chunks are still read and
	// reported (as marked for removal, so the master copies them
	// elsewhere) but the disk never receives new chunks.
	MarkedForRemoval bool
	// MoveOut ('<') and MoveIn ('>') are MooseFS's hints to move chunks
	// between a server's own disks. This package never places new chunks
	// on a MoveOut disk; moving existing chunks is left to the caller.
	MoveOut, MoveIn bool
	// IgnoreSizeChange ('~') tells MooseFS not to mark a disk damaged when
	// its total size changes a lot (compressed file systems). carpfs never
	// does that, so the flag is kept only so MooseFS files parse.
	IgnoreSizeChange bool
	// SizeLimit, when positive, caps the bytes this disk's chunk files may
	// take ("/mnt/hd4 1.5TiB").
	SizeLimit int64
	// LeaveFree, when LeaveFreeSet, is the space to keep free on this disk,
	// overriding Options.LeaveFree ("/mnt/hd3 -5GiB").
	LeaveFree    int64
	LeaveFreeSet bool
	// Line is the line of mfshdd.cfg the disk came from, 0 if none.
	Line int
}

// ErrHDDConfig is wrapped by every error about the content of mfshdd.cfg.
var ErrHDDConfig = errors.New("bad mfshdd.cfg")

// maxHDDLine bounds a line, so a binary file given by mistake fails fast.
const maxHDDLine = 4096

// ParseHDDConfig reads an mfshdd.cfg; name is used in error messages. See
// the package doc for the syntax. A file that defines no disk is an error,
// as it is for MooseFS.
func ParseHDDConfig(r io.Reader, name string) ([]DiskSpec, error) {
	var disks []DiskSpec
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 512), maxHDDLine)
	for n := 1; sc.Scan(); n++ {
		d, ok, err := parseHDDLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", ErrHDDConfig, name, n, err)
		}
		if !ok {
			continue
		}
		if prev, dup := seen[d.Path]; dup {
			return nil, fmt.Errorf("%w: %s:%d: %s is already listed on line %d", ErrHDDConfig, name, n, d.Path, prev)
		}
		seen[d.Path] = n
		d.Line = n
		disks = append(disks, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrHDDConfig, name, err)
	}
	if len(disks) == 0 {
		return nil, fmt.Errorf("%w: %s: no disk defined", ErrHDDConfig, name)
	}
	return disks, nil
}

// parseHDDLine parses one line; ok is false for blank and comment lines.
func parseHDDLine(line string) (d DiskSpec, ok bool, err error) {
	// A comment is a line whose first non-blank is '#' (MooseFS), or the
	// rest of a line after a blank and '#' (a carpfs extension: a path
	// with " #" in it is not worth the surprise of a silently ignored note).
	line = strings.TrimSpace(line)
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	if i := strings.Index(line, "\t#"); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return d, false, nil
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
			return d, false, fmt.Errorf("control character %q", c)
		}
	}

	// MooseFS's rule: the last blank-separated word is a space limit if it
	// reads as one, else part of the path. A last word that starts like a
	// number (or a minus) but is not one is an error here, not a strange
	// path.
	if i := strings.LastIndexAny(line, " \t"); i >= 0 {
		word := line[i+1:]
		if looksLikeSize(word) {
			neg := word[0] == '-'
			v, err := ParseSize(strings.TrimPrefix(word, "-"))
			if err != nil {
				return d, false, fmt.Errorf("space limit: %v", err)
			}
			if neg {
				d.LeaveFree, d.LeaveFreeSet = v, true
			} else {
				d.SizeLimit = v // 0 means none, as in MooseFS
			}
			line = strings.TrimRight(line[:i], " \t")
		}
	}

flags:
	for len(line) > 0 {
		var f *bool
		switch line[0] {
		case '*':
			f = &d.MarkedForRemoval
		case '<':
			f = &d.MoveOut
		case '>':
			f = &d.MoveIn
		case '~':
			f = &d.IgnoreSizeChange
		default:
			break flags
		}
		if *f {
			return d, false, fmt.Errorf("flag %q given twice", line[0])
		}
		*f = true
		line = line[1:]
	}
	if d.MoveIn && d.MoveOut {
		return d, false, errors.New("a disk cannot be both '<' (move out) and '>' (move in)")
	}
	if !strings.HasPrefix(line, "/") {
		return d, false, fmt.Errorf("path %q is not absolute (optional flags *<>~ go right before the leading /)", line)
	}
	d.Path = filepath.Clean(line)
	if strings.TrimRight(d.Path, " \t") != d.Path {
		return d, false, fmt.Errorf("path %q ends with a blank", d.Path)
	}
	return d, true, nil
}

// looksLikeSize says whether a last word is meant as a space limit: it
// starts with a digit, a dot or a minus.
func looksLikeSize(w string) bool {
	return w != "" && (w[0] >= '0' && w[0] <= '9' || w[0] == '.' || w[0] == '-')
}

// String is d as a line of mfshdd.cfg that parses back to d (but Line).
func (d DiskSpec) String() string {
	var b strings.Builder
	for _, f := range []struct {
		on bool
		c  byte
	}{{d.MarkedForRemoval, '*'}, {d.MoveOut, '<'}, {d.MoveIn, '>'}, {d.IgnoreSizeChange, '~'}} {
		if f.on {
			b.WriteByte(f.c)
		}
	}
	b.WriteString(d.Path)
	switch {
	case d.LeaveFreeSet:
		b.WriteString(" -" + strconv.FormatInt(d.LeaveFree, 10))
	case d.SizeLimit > 0:
		b.WriteString(" " + strconv.FormatInt(d.SizeLimit, 10))
	default:
		// A path whose last word reads as a size needs an explicit "no
		// limit" after it, or it would parse back as path plus limit.
		if i := strings.LastIndexAny(d.Path, " \t"); i >= 0 && looksLikeSize(d.Path[i+1:]) {
			b.WriteString(" 0")
		}
	}
	return b.String()
}

// ParseSize parses a size as MooseFS writes them (see config.ParseSize):
// mfshdd.cfg limits and HDD_LEAVE_SPACE_DEFAULT use the same units as
// every other size setting.
func ParseSize(s string) (int64, error) { return config.ParseSize(s) }
