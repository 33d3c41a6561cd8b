// Package config reads MooseFS-style configuration files into structs.
//
// A file holds one setting a line, `KEY = VALUE`, with `#` starting a
// comment that runs to the end of the line; blank lines are ignored and
// white space around keys and values is dropped. Keys are upper case
// letters, digits and underscores, as in MooseFS's mfsmaster.cfg.
//
// Bind copies the settings into a struct whose fields carry `cfg:"KEY"`
// tags. Unlike MooseFS, a key the struct does not know is an error that
// names the file and line: a typo must not silently leave a default in
// force. Every daemon can also run from its struct's defaults alone, so a
// missing file is not an error for callers that say so (LoadOptional).
package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Setting is one KEY = VALUE line.
type Setting struct {
	Key, Value string
	Line       int
}

// File is a parsed configuration file.
type File struct {
	Name     string // path or other name used in errors
	Settings []Setting
}

// ErrSyntax is wrapped by every error about a file's content.
var ErrSyntax = errors.New("bad configuration")

// maxLine bounds what one line may hold, so a binary file given by mistake
// fails fast instead of being buffered whole.
const maxLine = 64 << 10

// Parse reads a configuration from r; name is used in error messages.
func Parse(r io.Reader, name string) (*File, error) {
	f := &File{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	seen := map[string]int{}
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %s:%d: want KEY = VALUE, got %q", ErrSyntax, name, n, line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !validKey(key) {
			return nil, fmt.Errorf("%w: %s:%d: bad key %q (upper case letters, digits and _)", ErrSyntax, name, n, key)
		}
		if prev, dup := seen[key]; dup {
			return nil, fmt.Errorf("%w: %s:%d: %s already set on line %d", ErrSyntax, name, n, key, prev)
		}
		seen[key] = n
		f.Settings = append(f.Settings, Setting{Key: key, Value: value, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSyntax, name, err)
	}
	return f, nil
}

func validKey(k string) bool {
	if k == "" || k[0] < 'A' || k[0] > 'Z' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Load parses the file at path.
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer fh.Close()
	return Parse(fh, path)
}

// LoadOptional is Load, except that a missing file is an empty one.
func LoadOptional(path string) (*File, error) {
	f, err := Load(path)
	if errors.Is(err, os.ErrNotExist) {
		return &File{Name: path}, nil
	}
	return f, err
}

// Bind sets the fields of the struct dst points to from f. Fields are
// matched by their `cfg:"KEY"` tag; supported kinds are string, bool
// (0/1, yes/no, true/false, on/off), signed and unsigned integers (also
// sizes with a MooseFS unit: k, M, G are powers of 1000, Ki, Mi, Gi of
// 1024), time.Duration (Go syntax, or a bare number of seconds as MooseFS
// writes them) and []string (comma separated). Fields without a tag keep their values.
func Bind(f *File, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: Bind needs a pointer to a struct, got %T", dst)
	}
	fields := map[string]reflect.Value{}
	t := v.Elem().Type()
	for i := 0; i < t.NumField(); i++ {
		if key := t.Field(i).Tag.Get("cfg"); key != "" {
			fields[key] = v.Elem().Field(i)
		}
	}
	for _, s := range f.Settings {
		fv, ok := fields[s.Key]
		if !ok {
			return fmt.Errorf("%w: %s:%d: unknown setting %s", ErrSyntax, f.Name, s.Line, s.Key)
		}
		if err := set(fv, s.Value); err != nil {
			return fmt.Errorf("%w: %s:%d: %s: %v", ErrSyntax, f.Name, s.Line, s.Key, err)
		}
	}
	return nil
}

var durationType = reflect.TypeOf(time.Duration(0))

func set(fv reflect.Value, s string) error {
	switch {
	case fv.Type() == durationType:
		d, err := ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(s)
	case fv.Kind() == reflect.Bool:
		b, err := ParseBool(s)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case fv.Kind() >= reflect.Int && fv.Kind() <= reflect.Int64:
		n, err := parseInt(s, fv.Type().Bits())
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case fv.Kind() >= reflect.Uint && fv.Kind() <= reflect.Uint64:
		n, err := parseInt(s, 64)
		if err != nil {
			return err
		}
		if n < 0 || fv.OverflowUint(uint64(n)) {
			return fmt.Errorf("%q is out of range", s)
		}
		fv.SetUint(uint64(n))
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var list []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		fv.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("unsupported field type %s", fv.Type())
	}
	return nil
}

// ParseBool accepts 1/0, yes/no, true/false and on/off, any case.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (1/0, yes/no)", s)
}

// ParseDuration accepts Go durations ("1.5s", "2m") and bare numbers of
// seconds, which is how MooseFS configuration files write times.
func ParseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 || n > 1e9 {
			return 0, fmt.Errorf("%q seconds is out of range", s)
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (seconds, or like 1500ms)", s)
	}
	return d, nil
}

// parseInt parses a whole number, or a size with a MooseFS unit
// (ParseSize), so every size setting reads "256Mi" or "1G" alike.
func parseInt(s string, bits int) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if n, err = ParseSize(s); err != nil {
			return 0, err
		}
	}
	if bits < 64 && (n >= 1<<(bits-1) || n < -(1<<(bits-1))) {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n, nil
}
