package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fuseMagic is the f_type statfs(2) reports for every FUSE file system.
const fuseMagic = 0x65735546

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry struct {
	Point  string // where it is mounted
	Root   string // the mounted file system's directory shown there
	FSType string // "fuse.carpfs", "ext4", ...
	Source string // for carpfs "HOST:PORT:/SUBDIR"
}

// ParseMountInfo reads the format of proc(5)'s mountinfo.
func ParseMountInfo(b []byte) ([]MountEntry, error) {
	var out []MountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTS
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: %q: no '- TYPE SOURCE'", n, sc.Text())
		}
		out = append(out, MountEntry{
			Root: unescapeMount(f[3]), Point: unescapeMount(f[4]),
			FSType: unescapeMount(f[sep+1]), Source: unescapeMount(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountAt returns the topmost mount at dir (an absolute path without
// symbolic links), if there is one.
func mountAt(dir string) (MountEntry, bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return MountEntry{}, false, err
	}
	ms, err := ParseMountInfo(b)
	if err != nil {
		return MountEntry{}, false, err
	}
	// Later lines are mounted on top of earlier ones.
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Point == dir {
			return ms[i], true, nil
		}
	}
	return MountEntry{}, false, nil
}

// fuseMounted reports whether a FUSE file system is mounted at dir and
// answers: statfs(2) goes to the file system's server, so a mount whose
// server has not started, or has died, does not count.
func fuseMounted(dir string) bool {
	m, ok, err := mountAt(dir)
	if err != nil || !ok || !isFUSE(m.FSType) {
		return false
	}
	// A hung FUSE server never answers: give up on it, leaving the
	// goroutine blocked, rather than hang with it.
	answer := make(chan bool, 1)
	go func() {
		var st syscall.Statfs_t
		answer <- syscall.Statfs(dir, &st) == nil && st.Type == fuseMagic
	}()
	select {
	case ok := <-answer:
		return ok
	case <-time.After(statfsTimeout):
		return false
	}
}

// statfsTimeout bounds how long a mount may take to answer statfs(2).
const statfsTimeout = 5 * time.Second

func isFUSE(fstype string) bool { return fstype == "fuse" || strings.HasPrefix(fstype, "fuse.") }

// unmount unmounts the FUSE file system at dir: fusermount3 (or the
// older fusermount) as a user would, umount(2) as root when neither is
// installed. A busy mount is detached lazily, so a shell left in it does
// not keep the daemons from stopping; note says so.
func unmount(dir string) (note string, err error) {
	if err = unmountOnce(dir, false); err == nil {
		return "", nil
	}
	if lerr := unmountOnce(dir, true); lerr != nil {
		return "", fmt.Errorf("unmount %s: %w; lazily: %w", dir, err, lerr)
	}
	return fmt.Sprintf("it was busy (%v), so it was detached lazily", err), nil
}

func unmountOnce(dir string, lazy bool) error {
	for _, tool := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			continue
		}
		args := []string{"-u", dir}
		if lazy {
			args = []string{"-u", "-z", dir}
		}
		out, err := exec.Command(path, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	if err := syscall.Unmount(dir, flags); err != nil {
		return fmt.Errorf("umount %s (no fusermount3 installed): %w", dir, err)
	}
	return nil
}

// errNoFUSE explains what to install when FUSE is missing.
var errNoFUSE = errors.New("FUSE is not available: install it with `apt-get install fuse3` (Debian, Ubuntu; as root) or your system's fuse3 package, and run again")

// checkFUSE reports a machine that cannot mount: no /dev/fuse, or, for
// a user other than root (who mounts with mount(2) directly), no
// fusermount3 to mount through.
func checkFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w (/dev/fuse: %v)", errNoFUSE, err)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return fmt.Errorf("%w (%v)", errNoFUSE, err)
		}
	}
	return nil
}
