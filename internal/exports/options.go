package exports

import (
	"errors"
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
)

// Addrs is the ADDRESS column: everyone, a network, or a range.
type Addrs struct {
	any    bool
	prefix netip.Prefix // valid for networks and single addresses
	lo, hi netip.Addr   // valid for ranges
	text   string
}

func (a Addrs) String() string { return a.text }

// Contains reports whether addr is in the set.
func (a Addrs) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	switch {
	case a.any:
		return true
	case a.prefix.IsValid():
		return a.prefix.Contains(addr)
	case a.lo.IsValid():
		return addr.BitLen() == a.lo.BitLen() && a.lo.Compare(addr) <= 0 && addr.Compare(a.hi) <= 0
	}
	return false
}

// ParseAddrs parses an ADDRESS: *, A, A/bits, A/netmask or A-B.
func ParseAddrs(s string) (Addrs, error) {
	a := Addrs{text: s}
	if s == "*" {
		a.any = true
		return a, nil
	}
	bad := func(why string) (Addrs, error) {
		return Addrs{}, fmt.Errorf("address %q: %s (want *, IP, IP/bits, IP/netmask or IP-IP)", s, why)
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		l, err1 := netip.ParseAddr(lo)
		h, err2 := netip.ParseAddr(hi)
		if err1 != nil || err2 != nil {
			return bad("not two addresses")
		}
		l, h = l.Unmap(), h.Unmap()
		if l.BitLen() != h.BitLen() || h.Less(l) {
			return bad("the range is empty or mixes IPv4 and IPv6")
		}
		a.lo, a.hi = l, h
		return a, nil
	}
	ipText, mask, hasMask := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(ipText)
	if err != nil || ip.Zone() != "" {
		return bad("not an address")
	}
	ip = ip.Unmap()
	bits := ip.BitLen()
	if hasMask {
		if m, err := netip.ParseAddr(mask); err == nil {
			if bits, err = maskBits(m.Unmap(), ip.BitLen()); err != nil {
				return bad(err.Error())
			}
		} else if n, err := strconv.Atoi(mask); err == nil && n >= 0 && n <= ip.BitLen() && mask == strconv.Itoa(n) {
			bits = n
		} else {
			return bad("bad prefix length or netmask")
		}
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return bad(err.Error())
	}
	a.prefix = p
	return a, nil
}

// maskBits turns a netmask such as 255.255.255.0 into a prefix length,
// refusing masks whose one bits are not contiguous.
func maskBits(m netip.Addr, want int) (int, error) {
	if m.BitLen() != want {
		return 0, errors.New("netmask of another address family")
	}
	b := m.AsSlice()
	n := 0
	for n < len(b)*8 && b[n/8]&(0x80>>(n%8)) != 0 {
		n++
	}
	for i := n; i < len(b)*8; i++ {
		if b[i/8]&(0x80>>(i%8)) != 0 {
			return 0, errors.New("netmask bits are not contiguous")
		}
	}
	return n, nil
}

func parseOptions(e *Export, s string) error {
	for _, opt := range strings.Split(s, ",") {
		key, val, hasVal := strings.Cut(opt, "=")
		flag := func(dst *bool, v bool) error {
			if hasVal {
				return fmt.Errorf("option %s takes no value", key)
			}
			*dst = v
			return nil
		}
		need := func() error {
			if !hasVal || val == "" {
				return fmt.Errorf("option %s needs a value (%s=...)", key, key)
			}
			return nil
		}
		var err error
		switch key {
		case "ro", "readonly":
			err = flag(&e.ReadOnly, true)
		case "rw", "readwrite":
			err = flag(&e.ReadOnly, false)
		case "alldirs":
			err = flag(&e.AllDirs, true)
		case "dynamicip":
			err = flag(&e.DynamicIP, true)
		case "ignoregid":
			err = flag(&e.IgnoreGID, true)
		case "admin":
			err = flag(&e.Admin, true)
		case "maproot", "mapall":
			if err = need(); err == nil {
				var c Cred
				if c, err = parseCred(val); err == nil {
					if key == "maproot" {
						e.MapRoot = &c
					} else {
						e.MapAll = &c
					}
				}
			}
		case "password":
			if err = need(); err == nil {
				e.Password = val
			}
		case "md5pass":
			err = errors.New("md5pass is not supported by carpfs: use password=")
		case "minversion":
			if err = need(); err == nil {
				err = checkVersion(val)
				e.MinVersion = val
			}
		case "mingoal", "maxgoal":
			if err = need(); err == nil {
				n, perr := strconv.Atoi(val)
				if perr != nil || n < 1 || n > 9 || val != strconv.Itoa(n) {
					err = fmt.Errorf("%s=%q: want a goal from 1 to 9", key, val)
				} else if key == "mingoal" {
					e.MinGoal = uint8(n)
				} else {
					e.MaxGoal = uint8(n)
				}
			}
		case "mintrashtime", "maxtrashtime":
			if err = need(); err == nil {
				var d uint64
				if d, err = parseTrashTime(val); err == nil {
					if key == "mintrashtime" {
						e.MinTrash = d
					} else {
						e.MaxTrash = d
					}
				}
			}
		case "nonrootmeta":
			err = errors.New("option nonrootmeta applies to the meta file system, which carpfs does not support")
		case "":
			err = errors.New("empty option (two commas in a row?)")
		default:
			err = fmt.Errorf("unknown option %q", key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseCred parses USER[:GROUP], each a number or a name known to the
// master's system.
func parseCred(s string) (Cred, error) {
	us, gs, hasGroup := strings.Cut(s, ":")
	var c Cred
	uid, primary, err := lookupUser(us)
	if err != nil {
		return c, err
	}
	c.UID, c.GID = uid, primary
	if hasGroup {
		if c.GID, err = lookupGroup(gs); err != nil {
			return c, err
		}
	}
	return c, nil
}

// lookupUser returns a user's uid and primary gid. A number the system
// does not know keeps its own value as gid.
func lookupUser(s string) (uint32, uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && s == strconv.FormatUint(n, 10) {
		gid := uint32(n)
		if u, err := user.LookupId(s); err == nil {
			if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
				gid = uint32(g)
			}
		}
		return uint32(n), gid, nil
	}
	if s == "" || !validName(s) {
		return 0, 0, fmt.Errorf("user %q: want a uid or a user name", s)
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: %w", s, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("user %q has a non-numeric uid or gid", s)
	}
	return uint32(uid), uint32(gid), nil
}

func lookupGroup(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && s == strconv.FormatUint(n, 10) {
		return uint32(n), nil
	}
	if s == "" || !validName(s) {
		return 0, fmt.Errorf("group %q: want a gid or a group name", s)
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", s, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric gid", s)
	}
	return uint32(n), nil
}

// validName accepts what useradd accepts, roughly; it keeps odd bytes
// out of system lookups and error messages.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return len(s) <= 32
}

// checkVersion accepts X, X.Y or X.Y.Z.
func checkVersion(s string) error {
	parts := strings.Split(s, ".")
	if len(parts) > 3 {
		return fmt.Errorf("minversion=%q: want X, X.Y or X.Y.Z", s)
	}
	for _, p := range parts {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || p != strconv.FormatUint(n, 10) {
			return fmt.Errorf("minversion=%q: want X, X.Y or X.Y.Z", s)
		}
	}
	return nil
}

// parseTrashTime accepts seconds, or #W#D#H#M#S parts in that order
// (any may be left out), as MooseFS does.
func parseTrashTime(s string) (uint64, error) {
	bad := fmt.Errorf("trash time %q: want seconds or #W#D#H#M#S", s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return n, nil
	}
	units := "WDHMS"
	mult := []uint64{7 * 86400, 86400, 3600, 60, 1}
	var total uint64
	next := 0 // index in units of the next allowed unit
	num := ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			num += string(c)
			if len(num) > 9 {
				return 0, bad
			}
			continue
		}
		j := strings.IndexByte(units, c&^0x20)
		if j < next || num == "" {
			return 0, bad
		}
		n, _ := strconv.ParseUint(num, 10, 32)
		total += n * mult[j]
		num, next = "", j+1
	}
	if num != "" || total > 1<<32-1 {
		return 0, bad
	}
	return total, nil
}
