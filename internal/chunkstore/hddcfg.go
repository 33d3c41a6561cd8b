package chunkstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
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

// sizeUnits are MooseFS's: k, M, G, T, P, E are powers of 1000, Ki ... Ei
// powers of 1024 (a lone K is neither), each optionally followed by B.
var sizeUnits = map[string]int64{
	"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
}

// ParseSize parses a size as MooseFS writes them in mfshdd.cfg and
// HDD_LEAVE_SPACE_DEFAULT: a decimal number with an optional fraction and
// unit, "[0-9]*(.[0-9]*)?([kMGTPE]|[KMGTPE]i)?B?" ("256MiB", "1.5T",
// "5GiB", "100"). The result is rounded to whole bytes.
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSuffix(s[i:], "B")
	intPart, frac, hasDot := strings.Cut(num, ".")
	if num == "" || strings.Contains(frac, ".") || hasDot && frac == "" || intPart == "" && frac == "" {
		return 0, fmt.Errorf("%q is not a size (like 256MiB, 1.5T or 100)", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		hint := ""
		if unit == "K" {
			hint = "; write k (1000) or Ki (1024)"
		}
		return 0, fmt.Errorf("%q has an unknown unit %q (k M G T P E or Ki Mi Gi Ti Pi Ei, optional B)%s", s, unit, hint)
	}
	// big.Rat keeps "1.5TiB" and twenty-digit numbers exact, where the
	// float64 MooseFS uses would round.
	r, ok := new(big.Rat).SetString("0" + num)
	if !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Lsh(m, 1).Cmp(r.Denom()) >= 0 { // round half up
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return q.Int64(), nil
}
