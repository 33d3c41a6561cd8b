package mount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/carpfs/carpfs/internal/config"
)

// DefaultConfigFile is read when no -c is given; it may be missing.
const DefaultConfigFile = "/etc/mfs/mfsmount.cfg"

// Settings are what the command line and mfsmount.cfg decide.
type Settings struct {
	Mountpoint string
	Host       string
	Port       uint16
	Subdir     string
	Password   string
	AuthCode   string
	Timeout    time.Duration // a lost master is waited for this long
	WriteCache int64         // bytes of writes buffered
	ReadAhead  int64         // bytes read ahead per file
	AttrTTL    time.Duration
	EntryTTL   time.Duration
	NegTTL     time.Duration
	ReadOnly   bool
	AllowOther bool
	Extra      []string // nosuid, nodev, noexec, suid, dev, exec
	Debug      bool
	Foreground bool
	Fake       bool // mount.mfs -f: check everything, mount nothing
}

// Defaults are the settings with no options given.
func Defaults() Settings {
	return Settings{
		Host: "mfsmaster", Port: 9421, Subdir: "/",
		Timeout: 3 * time.Minute, WriteCache: 128 << 20, ReadAhead: 16 << 20,
		AttrTTL: time.Second, EntryTTL: time.Second, NegTTL: time.Second,
	}
}

// Validate reports settings that cannot work.
func (s *Settings) Validate() error {
	switch {
	case s.Mountpoint == "":
		return errors.New("no mount point given")
	case s.Host == "":
		return errors.New("mfsmaster is empty")
	case s.Port == 0:
		return errors.New("mfsport is 0")
	case !strings.HasPrefix(s.Subdir, "/"):
		return fmt.Errorf("mfssubfolder %q is not an absolute path", s.Subdir)
	case s.Timeout <= 0:
		return errors.New("mfstimeout must be positive")
	case s.WriteCache < 8<<20:
		return fmt.Errorf("mfswritecachesize %d MiB is below 8 MiB", s.WriteCache>>20)
	}
	return nil
}

// Addr is the master's HOST:PORT.
func (s *Settings) Addr() string {
	return net.JoinHostPort(s.Host, strconv.Itoa(int(s.Port)))
}

// ignored are mount options that mount(8) and fstab use and that mean
// nothing (more) here: default_permissions is always on, times are the
// master's.
var ignored = map[string]bool{
	"defaults": true, "_netdev": true, "auto": true, "noauto": true, "nofail": true,
	"user": true, "users": true, "nouser": true, "owner": true, "group": true,
	"rw": true, "async": true, "atime": true, "noatime": true, "relatime": true,
	"strictatime": true, "nodiratime": true, "default_permissions": true, "nonempty": true,
}

// option applies one -o option ("name" or "name=value").
func (s *Settings) option(opt string) error {
	name, value, hasValue := strings.Cut(opt, "=")
	need := func() error {
		if !hasValue || value == "" {
			return fmt.Errorf("option %s needs a value (%s=...)", name, name)
		}
		return nil
	}
	var err error
	switch name {
	case "mfsmaster":
		if err = need(); err == nil {
			s.Host = value
		}
	case "mfsport":
		if err = need(); err == nil {
			s.Port, err = parsePort(value)
		}
	case "mfssubfolder":
		if err = need(); err == nil {
			s.Subdir = cleanSubdir(value)
		}
	case "mfspassword":
		if err = need(); err == nil {
			s.Password = value
		}
	case "mfsauthcode":
		if err = need(); err == nil {
			s.AuthCode = value
		}
	case "mfstimeout":
		if err = need(); err == nil {
			s.Timeout, err = config.ParseDuration(value)
		}
	case "mfswritecachesize":
		if err = need(); err == nil {
			s.WriteCache, err = parseMiB(value)
		}
	case "mfsreadaheadsize":
		if err = need(); err == nil {
			s.ReadAhead, err = parseMiB(value)
		}
	case "mfsattrcacheto":
		if err = need(); err == nil {
			s.AttrTTL, err = config.ParseDuration(value)
		}
	case "mfsentrycacheto", "mfsdirentrycacheto":
		if err = need(); err == nil {
			s.EntryTTL, err = config.ParseDuration(value)
		}
	case "mfsnegentrycacheto":
		if err = need(); err == nil {
			s.NegTTL, err = config.ParseDuration(value)
		}
	case "mfsdebug", "debug":
		s.Debug = true
	case "ro":
		s.ReadOnly = true
	case "allow_other":
		s.AllowOther = true
	case "nosuid", "suid", "nodev", "dev", "noexec", "exec":
		s.Extra = append(s.Extra, name)
	default:
		if ignored[name] || strings.HasPrefix(name, "x-") || name == "comment" {
			return nil
		}
		return fmt.Errorf("unknown mount option %q", name)
	}
	if err != nil {
		return fmt.Errorf("option %s: %w", name, err)
	}
	return nil
}

// options applies a comma-separated -o list.
func (s *Settings) options(list string) error {
	for _, o := range strings.Split(list, ",") {
		if o = strings.TrimSpace(o); o != "" {
			if err := s.option(o); err != nil {
				return err
			}
		}
	}
	return nil
}

func parsePort(v string) (uint16, error) {
	p, err := strconv.ParseUint(v, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("%q is not a port", v)
	}
	return uint16(p), nil
}

// parseMiB reads a size in MiB as MooseFS writes them ("256"), or with a
// unit ("1GiB").
func parseMiB(v string) (int64, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt64>>20 {
			return 0, fmt.Errorf("%q MiB is out of range", v)
		}
		return n << 20, nil
	}
	return config.ParseSize(v)
}

func cleanSubdir(v string) string {
	return path.Clean("/" + v)
}

// LoadConfigFile reads mfsmount.cfg as MooseFS does: each line holds
// mount options as -o takes them (comma separated), or an absolute path,
// the mount point used when the command line names none; "#" starts a
// comment.
func (s *Settings) LoadConfigFile(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "/"):
			s.Mountpoint = line
		default:
			if err := s.options(line); err != nil {
				return fmt.Errorf("%s:%d: %w", name, n, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// parseSpec reads mount(8)'s source, as /etc/fstab gives it:
// "HOST[:PORT][:/SUBDIR]" (also "HOST:/SUBDIR"), HOST possibly an IPv6
// address in brackets.
func parseSpec(spec string) (host string, port uint16, subdir string, err error) {
	rest := spec
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", 0, "", fmt.Errorf("source %q: unclosed [", spec)
		}
		host, rest = rest[1:end], rest[end+1:]
	} else {
		i := strings.IndexAny(rest, ":/")
		if i < 0 {
			i = len(rest)
		}
		host, rest = rest[:i], rest[i:]
	}
	if host == "" {
		return "", 0, "", fmt.Errorf("source %q: no master host (want HOST[:PORT][:/SUBDIR])", spec)
	}
	if strings.HasPrefix(rest, ":") && !strings.HasPrefix(rest, ":/") {
		p := rest[1:]
		if i := strings.IndexByte(p, ':'); i >= 0 {
			p, rest = p[:i], p[i:]
		} else {
			rest = ""
		}
		if port, err = parsePort(p); err != nil {
			return "", 0, "", fmt.Errorf("source %q: %w", spec, err)
		}
	}
	rest = strings.TrimPrefix(rest, ":")
	switch {
	case rest == "":
		subdir = "/"
	case strings.HasPrefix(rest, "/"):
		subdir = cleanSubdir(rest)
	default:
		return "", 0, "", fmt.Errorf("source %q: %q is not :/SUBDIR", spec, rest)
	}
	return host, port, subdir, nil
}

// Invocation is a parsed command line.
type Invocation struct {
	Settings Settings
	Help     bool
	Version  bool
}

// usage is mfsmount's help.
const usage = `usage: mfsmount [MOUNTPOINT] [-f] [-d] [-H HOST] [-P PORT] [-S SUBDIR] [-c CFGFILE] [-o OPT[,OPT...]]
       mount.mfs HOST[:PORT][:/SUBDIR] MOUNTPOINT [-sfnv] [-o OPT[,OPT...]]

  -H HOST      master host (mfsmaster=, default mfsmaster)
  -P PORT      master client port (mfsport=, default 9421)
  -S SUBDIR    exported directory to mount (mfssubfolder=, default /)
  -c CFGFILE   options file (default ` + DefaultConfigFile + `, may be missing):
               one line per -o list, or the mount point
  -f           stay in the foreground (as mount.mfs: check only, mount nothing)
  -d           debug: trace every FUSE request (implies -f)
  -o OPTS      mfsmaster=, mfsport=, mfssubfolder=, mfspassword=, mfsauthcode=,
               mfstimeout=SEC (how long a lost master is waited for, 180),
               mfswritecachesize=MiB (128), mfsreadaheadsize=MiB (16),
               mfsattrcacheto=, mfsentrycacheto=, mfsnegentrycacheto=SEC (1),
               mfsdebug, ro, allow_other, nosuid, nodev, noexec, suid, dev, exec;
               defaults, _netdev, noauto and other fstab options are accepted
`

// parseArgs reads a command line (args without the program name). As
// mount.mfs, it takes mount(8)'s convention: SPEC DIR [-sfnv] [-o OPTS].
// Options may come before or after the mount point, as for FUSE
// programs.
// defaultCfg is read when no -c names a file, if it exists.
func parseArgs(args []string, helper bool, defaultCfg string) (Invocation, error) {
	inv := Invocation{Settings: Defaults()}
	s := &inv.Settings
	cfgFile, cfgGiven := defaultCfg, false
	var pos []string
	var opts []func() error // applied after the configuration file
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flag, val := a[:2], a[2:]
		takes := strings.Contains("oHPScN", flag[1:]) && len(flag) == 2 && flag[1] != '-'
		if takes && val == "" {
			if i+1 >= len(args) {
				return inv, fmt.Errorf("%s needs a value", flag)
			}
			i++
			val = args[i]
		}
		switch {
		case a == "-h" || a == "--help":
			inv.Help = true
		case a == "-V" || a == "--version":
			inv.Version = true
		case flag == "-o":
			opts = append(opts, func() error { return s.options(val) })
		case flag == "-H" && !helper:
			opts = append(opts, func() error { s.Host = val; return nil })
		case flag == "-P" && !helper:
			opts = append(opts, func() error {
				var err error
				s.Port, err = parsePort(val)
				return err
			})
		case flag == "-S" && !helper:
			opts = append(opts, func() error { s.Subdir = cleanSubdir(val); return nil })
		case flag == "-c" && !helper:
			cfgFile, cfgGiven = val, true
		case flag == "-N" && helper:
			return inv, errors.New("mount namespaces (-N) are not supported")
		case helper && strings.Trim(a[1:], "sfnv") == "":
			// mount(8)'s helper flags: sloppy, fake, no mtab, verbose.
			s.Fake = s.Fake || strings.Contains(a, "f")
		case a == "-f" && !helper:
			s.Foreground = true
		case a == "-d" && !helper:
			s.Debug, s.Foreground = true, true
		case a == "-t" && helper:
			i++ // mount(8) may pass the type again
		default:
			return inv, fmt.Errorf("unknown flag %s", a)
		}
	}
	if inv.Help || inv.Version {
		return inv, nil
	}
	if helper {
		if len(pos) != 2 {
			return inv, fmt.Errorf("want SOURCE MOUNTPOINT, got %d arguments", len(pos))
		}
		host, port, sub, err := parseSpec(pos[0])
		if err != nil {
			return inv, err
		}
		opts = append([]func() error{func() error {
			s.Host, s.Subdir = host, sub
			if port != 0 {
				s.Port = port
			}
			return nil
		}}, opts...)
		pos = pos[1:]
	}
	if err := s.loadConfig(cfgFile, cfgGiven); err != nil {
		return inv, err
	}
	for _, o := range opts {
		if err := o(); err != nil {
			return inv, err
		}
	}
	switch len(pos) {
	case 0:
	case 1:
		s.Mountpoint = pos[0]
	default:
		return inv, fmt.Errorf("more than one mount point: %s", strings.Join(pos, " "))
	}
	return inv, s.Validate()
}

// loadConfig reads the configuration file; a missing default one is
// fine, a missing named one is not.
func (s *Settings) loadConfig(name string, given bool) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) && !given {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configuration file: %w", err)
	}
	defer f.Close()
	return s.LoadConfigFile(f, name)
}
