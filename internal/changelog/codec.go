package changelog

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/carpfs/carpfs/internal/meta"
)

// MaxLineSize bounds one encoded line, newline included. It leaves room for
// the largest xattr value Linux allows (64 KiB, tripled by escaping) and
// keeps a reader from buffering an unbounded run of garbage as one line.
// The encoder refuses longer lines so that the writer never logs what a
// reader would refuse.
const MaxLineSize = 1 << 20

// ErrCorrupt matches every error that says changelog bytes are not a valid,
// in-sequence entry: a *ParseError from ParseLine and a *CorruptError from a
// Reader.
var ErrCorrupt = errors.New("corrupt changelog")

// castagnoli is the CRC-32C table; hash/crc32 uses the CPU's crc32
// instruction for it where there is one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ParseError says why a line is not a canonical changelog line and where.
type ParseError struct {
	Col    int    // 1-based byte column of the first offending byte
	Reason string // what is wrong, without the position
	Err    error  // underlying cause, such as meta.ErrUnknownOp; may be nil
}

func (e *ParseError) Error() string {
	return "parse changelog line: column " + strconv.Itoa(e.Col) + ": " + e.Reason
}

// Unwrap exposes the cause, so errors.Is(err, meta.ErrUnknownOp) works.
func (e *ParseError) Unwrap() error { return e.Err }

// Is makes every ParseError match ErrCorrupt.
func (e *ParseError) Is(target error) bool { return target == ErrCorrupt }

// off is a 0-based offset into the line; errors carry it as a 1-based column.
func parseErr(off int, reason string) *ParseError {
	return &ParseError{Col: off + 1, Reason: reason}
}

// Encoder appends entries as changelog lines. The zero value is ready; one
// Encoder reused for many entries allocates nothing per entry. It is not
// safe for concurrent use.
type Encoder struct {
	w argWriter
}

// AppendEntry appends e's line, trailing newline included, to dst. It is a
// convenience over Encoder for callers that encode rarely.
func AppendEntry(dst []byte, e *meta.Entry) ([]byte, error) {
	var enc Encoder
	return enc.AppendEntry(dst, e)
}

// AppendEntry appends e's line, trailing newline included, to dst. On error
// dst is returned unchanged. An entry whose Result is a failure is refused:
// failed operations change nothing and are never logged.
func (enc *Encoder) AppendEntry(dst []byte, e *meta.Entry) ([]byte, error) {
	if err := checkEntry(e); err != nil {
		return dst, fmt.Errorf("encode changelog entry %d: %w", e.Version, err)
	}
	start := len(dst)
	dst = strconv.AppendUint(dst, e.Version, 10)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, e.Term, 10)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, uint64(e.Time), 10)
	dst = append(dst, '|')
	dst = append(dst, e.Op.OpName()...)
	dst = append(dst, '(')
	enc.w = argWriter{b: dst}
	e.Op.EncodeArgs(&enc.w)
	dst, enc.w.b = enc.w.b, nil
	dst = append(dst, ')', '|')
	for i := 0; i < int(e.Result.N); i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, e.Result.Val[i], 10)
	}
	sum := crc32.Checksum(dst[start:], castagnoli)
	dst = append(dst, '|')
	dst = appendHex32(dst, sum)
	dst = append(dst, '\n')
	if len(dst)-start > MaxLineSize {
		return dst[:start], fmt.Errorf("encode changelog entry %d: line is %d bytes, over the %d byte limit", e.Version, len(dst)-start, MaxLineSize)
	}
	return dst, nil
}

// checkEntry refuses what would not round-trip through the line format.
func checkEntry(e *meta.Entry) error {
	if e.Op == nil {
		return errors.New("no operation")
	}
	if e.Result.Err != 0 {
		return fmt.Errorf("result is %s: failed operations are never logged", meta.ErrnoName(e.Result.Err))
	}
	if e.Result.N > 2 {
		return fmt.Errorf("result has %d values, at most 2 fit", e.Result.N)
	}
	for i := int(e.Result.N); i < 2; i++ {
		if e.Result.Val[i] != 0 {
			return fmt.Errorf("result value %d is set but the result has only %d values", i+1, e.Result.N)
		}
	}
	name := e.Op.OpName()
	if name == "" {
		return errors.New("empty operation name")
	}
	for i := 0; i < len(name); i++ {
		if !isNameByte(name[i]) {
			return fmt.Errorf("operation name %q: byte %d is not A-Z, 0-9 or _", name, i)
		}
	}
	return nil
}

func isNameByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// needsEscape says whether a string byte is written as %XX: everything that
// is not printable ASCII, and the bytes that delimit the line's fields.
func needsEscape(c byte) bool { return escapeTable[c] }

// escapeTable is needsEscape as a fixed lookup table: one load per byte
// instead of seven compares, on the loop that scans every name.
var escapeTable = func() (t [256]bool) {
	for c := range t {
		t[c] = c < 0x21 || c > 0x7e || strings.IndexByte("%,()|", byte(c)) >= 0
	}
	return t
}()

const upperHex = "0123456789ABCDEF"
const lowerHex = "0123456789abcdef"

func appendHex32(dst []byte, v uint32) []byte {
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, lowerHex[v>>uint(shift)&0xf])
	}
	return dst
}

// argWriter is the codec's meta.ArgWriter: comma-separated arguments, numbers
// in decimal, strings percent-escaped.
type argWriter struct {
	b []byte
	n int
}

var _ meta.ArgWriter = (*argWriter)(nil)

func (w *argWriter) sep() {
	if w.n > 0 {
		w.b = append(w.b, ',')
	}
	w.n++
}

func (w *argWriter) Uint(v uint64) {
	w.sep()
	w.b = strconv.AppendUint(w.b, v, 10)
}

func (w *argWriter) String(s string) {
	w.sep()
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			w.b = append(w.b, '%', upperHex[c>>4], upperHex[c&0xf])
		} else {
			w.b = append(w.b, c)
		}
	}
}

// Parser turns changelog lines into entries. The zero value is ready; one
// Parser reused for many lines allocates only the operation and its strings.
// It is not safe for concurrent use.
type Parser struct {
	ar argReader
	od meta.OpDecoder
}

// ParseLine parses one line, which must include its trailing newline: a line
// without one is torn, and refusing it here keeps that rule in one place.
// It accepts exactly the lines Encoder produces, so re-encoding the result
// gives back the same bytes. Errors are *ParseError.
func ParseLine(line []byte) (meta.Entry, error) {
	var p Parser
	return p.ParseLine(line)
}

// ParseLine is like the package-level ParseLine but reuses p's buffers.
func (p *Parser) ParseLine(line []byte) (meta.Entry, error) {
	e, perr := p.parse(line)
	if perr != nil {
		return meta.Entry{}, perr
	}
	return e, nil
}

// parse returns a concrete pointer so callers can test it against nil
// without the typed-nil trap of returning it as error.
func (p *Parser) parse(line []byte) (meta.Entry, *ParseError) {
	var e meta.Entry
	n := len(line)
	if n == 0 || line[n-1] != '\n' {
		return e, parseErr(n, "no newline at end of line")
	}
	// A newline inside body needs no check of its own: no field accepts
	// one, so the field it lands in refuses it.
	body := line[:n-1]

	pos := 0
	var perr *ParseError
	e.Version, pos, perr = uintField(body, pos, "version", ^uint64(0))
	if perr != nil {
		return e, perr
	}
	e.Term, pos, perr = uintField(body, pos, "term", ^uint64(0))
	if perr != nil {
		return e, perr
	}
	var t uint64
	t, pos, perr = uintField(body, pos, "time", 1<<32-1)
	if perr != nil {
		return e, perr
	}
	e.Time = uint32(t)

	nameStart := pos
	for pos < len(body) && isNameByte(body[pos]) {
		pos++
	}
	if pos == len(body) || body[pos] != '(' {
		return e, parseErr(pos, "operation name must be A-Z, 0-9 or _ followed by '('")
	}
	if pos == nameStart {
		return e, parseErr(pos, "empty operation name")
	}
	nameBytes := body[nameStart:pos]
	pos++
	argStart := pos
	rparen := bytes.IndexByte(body[pos:], ')')
	if rparen < 0 {
		return e, parseErr(len(body), "no ')' closing the arguments")
	}
	argEnd := pos + rparen
	pos = argEnd + 1
	if pos == len(body) || body[pos] != '|' {
		return e, parseErr(pos, "want '|' after ')'")
	}
	pos++

	e.Result, pos, perr = resultField(body, pos)
	if perr != nil {
		return e, perr
	}
	crcStart := pos
	if len(body)-crcStart != 8 {
		return e, parseErr(crcStart, "checksum must be 8 lowercase hex digits")
	}
	// Every line pays for these eight digits, so they are decoded without
	// a branch per digit; a bad one is looked for only once known.
	var want uint32
	var bad byte
	for _, c := range body[crcStart:] {
		v := lowerHexVal[c]
		bad |= v
		want = want<<4 | uint32(v&0xf)
	}
	if bad > 0xf {
		for i := crcStart; ; i++ {
			if lowerHexVal[body[i]] > 0xf {
				return e, parseErr(i, "checksum must be 8 lowercase hex digits")
			}
		}
	}
	if got := crc32.Checksum(body[:crcStart-1], castagnoli); got != want {
		return e, parseErr(crcStart, fmt.Sprintf("checksum mismatch: line has %08x, bytes give %08x", want, got))
	}

	p.ar.reset(body[argStart:argEnd], argStart)
	op, err := p.od.Decode(nameBytes, &p.ar)
	leftover := p.ar.leftover()
	p.ar.a = nil // do not keep the caller's buffer alive
	switch {
	case err == nil:
	case p.ar.err != nil:
		// The reader's own error knows its column.
		return e, &ParseError{Col: p.ar.err.Col, Reason: string(nameBytes) + " argument: " + p.ar.err.Reason}
	case errors.Is(err, meta.ErrUnknownOp):
		return e, &ParseError{Col: nameStart + 1, Reason: err.Error(), Err: err}
	default:
		// A range or type error from meta only knows the operation, so it
		// points at the start of the arguments.
		return e, &ParseError{Col: argStart + 1, Reason: err.Error(), Err: err}
	}
	if leftover != nil {
		return e, leftover
	}
	e.Op = op
	return e, nil
}

// The field parsers below scan each byte once. They replaced a version that
// first split fields with bytes.IndexByte: on fields of one to ten bytes
// the call overhead of IndexByte cost more than the scanning itself.

// scanUint reads decimal digits from b[pos:] and stops at the first other
// byte. It only checks overflow; the caller checks what ends the number.
func scanUint(b []byte, pos int, what string, max uint64) (uint64, int, *ParseError) {
	start := pos
	var v uint64
	for ; pos < len(b); pos++ {
		d := b[pos] - '0'
		if d > 9 {
			break
		}
		v = v*10 + uint64(d) // cannot wrap before the 20th digit
	}
	if pos-start >= 20 && !fitsUint64(b[start:pos]) || v > max {
		return 0, pos, parseErr(start, what+" overflows "+strconv.FormatUint(max, 10))
	}
	return v, pos, nil
}

// fitsUint64 says whether the digits are at most 2^64-1, for the rare
// numbers long enough to have wrapped in scanUint's fast loop.
func fitsUint64(digits []byte) bool {
	var v uint64
	for _, c := range digits {
		d := uint64(c - '0')
		if v > (^uint64(0)-d)/10 {
			return false
		}
		v = v*10 + d
	}
	return true
}

// canonicalNumber is the common case of numberErr, small enough to inline:
// digits, no leading zero, followed by sep.
func canonicalNumber(b []byte, start, end int, sep byte) bool {
	return end < len(b) && b[end] == sep && end > start && (b[start] != '0' || end-start == 1)
}

// numberErr explains why b[start:end] followed by b[end] is not a number
// ended by one of the separators, or returns nil if it is one. end ==
// len(b) counts as a separator when atEnd allows it.
func numberErr(b []byte, start, end int, what string, sep1, sep2 byte, atEnd bool) *ParseError {
	if end < len(b) && b[end] != sep1 && b[end] != sep2 {
		return parseErr(end, fmt.Sprintf("byte %q in %s is not a digit", b[end], what))
	}
	if end == start {
		return parseErr(start, "empty "+what)
	}
	if b[start] == '0' && end-start > 1 {
		return parseErr(start, "leading zero in "+what)
	}
	if end == len(b) && !atEnd {
		return parseErr(end, fmt.Sprintf("no %q after %s", sep1, what))
	}
	return nil
}

// uintField parses a decimal field ending in '|' at pos and returns the
// position after the '|'.
func uintField(b []byte, pos int, what string, max uint64) (uint64, int, *ParseError) {
	v, end, perr := scanUint(b, pos, what, max)
	if perr == nil && !canonicalNumber(b, pos, end, '|') {
		perr = numberErr(b, pos, end, what, '|', '|', false)
	}
	return v, end + 1, perr
}

// resultField parses the result values ending in '|' at pos.
func resultField(b []byte, pos int) (meta.Result, int, *ParseError) {
	var r meta.Result
	if pos < len(b) && b[pos] == '|' {
		return r, pos + 1, nil
	}
	for {
		if r.N == 2 {
			return r, pos, parseErr(pos, "result has more than 2 values")
		}
		v, end, perr := scanUint(b, pos, "result", ^uint64(0))
		if perr == nil && !canonicalNumber(b, pos, end, '|') && !canonicalNumber(b, pos, end, ',') {
			perr = numberErr(b, pos, end, "result", '|', ',', false)
		}
		if perr != nil {
			return r, pos, perr
		}
		r.Val[r.N] = v
		r.N++
		if b[end] == '|' {
			return r, end + 1, nil
		}
		pos = end + 1
		if pos == len(b) || b[pos] == '|' {
			return r, pos, parseErr(pos, "empty result value after ','")
		}
	}
}

// lowerHexVal maps a lowercase hex digit to its value and any other byte
// to 0xff.
var lowerHexVal = func() (t [256]byte) {
	for c := range t {
		t[c] = 0xff
		if v := hexVal(byte(c), 'a'); v >= 0 {
			t[c] = byte(v)
		}
	}
	return t
}()

// hexVal is the value of c as a hex digit of the given case ('a' for
// lowercase, 'A' for uppercase), or -1. Arithmetic, not a string search:
// it runs eight times per line for the checksum.
func hexVal(c byte, letterA byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= letterA && c <= letterA+5:
		return int(c-letterA) + 10
	}
	return -1
}

// argReader is the codec's meta.ArgReader over the bytes between '(' and
// ')'. Arguments are separated by ','; "" holds either no argument or one
// empty string, whichever the operation asks for.
type argReader struct {
	a       []byte
	off     int // where a starts in the line
	pos     int // start of the next argument; len(a)+1 once all are read
	scratch []byte
	err     *ParseError
}

var _ meta.ArgReader = (*argReader)(nil)

func (r *argReader) reset(a []byte, off int) {
	r.a, r.off, r.pos, r.err = a, off, 0, nil
}

// more says whether another argument can be read, failing if not.
func (r *argReader) more() bool {
	if r.err != nil {
		return false
	}
	if r.pos > len(r.a) {
		r.err = parseErr(r.off+len(r.a), "missing argument")
		return false
	}
	return true
}

// consume moves past the argument that ends at end.
func (r *argReader) consume(end int) {
	r.pos = end + 1 // past the ',' or, at the end, past len(a)
}

func (r *argReader) Uint() uint64 {
	if !r.more() {
		return 0
	}
	v, end, perr := scanUint(r.a, r.pos, "argument", ^uint64(0))
	if perr == nil && !(end == len(r.a) && end > r.pos && (r.a[r.pos] != '0' || end-r.pos == 1)) &&
		!canonicalNumber(r.a, r.pos, end, ',') {
		perr = numberErr(r.a, r.pos, end, "argument", ',', ',', true)
	}
	if perr != nil {
		perr.Col += r.off
		r.err = perr
		return 0
	}
	r.consume(end)
	return v
}

func (r *argReader) String() string {
	if !r.more() {
		return ""
	}
	start, end := r.pos, r.pos
	plain := true
	for ; end < len(r.a); end++ {
		c := r.a[end]
		if c == ',' {
			break
		}
		if c == '%' {
			plain = false
		} else if needsEscape(c) {
			r.err = parseErr(r.off+end, fmt.Sprintf("byte %q must be written as %%%02X", c, c))
			return ""
		}
	}
	r.consume(end)
	b := r.a[start:end]
	if plain {
		return string(b)
	}
	out := r.scratch[:0]
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		col := r.off + start + i
		if i+2 >= len(b) {
			r.err = parseErr(col, "'%' needs two hex digits")
			return ""
		}
		hi, lo := hexVal(b[i+1], 'A'), hexVal(b[i+2], 'A')
		if hi < 0 || lo < 0 {
			r.err = parseErr(col, "'%' needs two uppercase hex digits")
			return ""
		}
		d := byte(hi<<4 | lo)
		if !needsEscape(d) {
			r.err = parseErr(col, fmt.Sprintf("%%%02X escapes %q, which is written as itself", d, d))
			return ""
		}
		out = append(out, d)
		i += 2
	}
	r.scratch = out
	return string(out)
}

func (r *argReader) Err() error {
	if r.err == nil {
		return nil
	}
	return r.err
}

// leftover refuses arguments the operation did not read: dropping them
// silently would make two different lines decode to one entry.
func (r *argReader) leftover() *ParseError {
	if r.pos == len(r.a)+1 || len(r.a) == 0 && r.pos == 0 {
		return nil
	}
	return parseErr(r.off+r.pos, "more arguments than the operation takes")
}
