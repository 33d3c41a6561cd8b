package carpwatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is carpwatch.cfg. Every key has a default but VIP and
// METALOGGERS, which say what to watch and whom to fence.
type Config struct {
	// VIP is the virtual address the CARP speaker moves (ADDR or
	// ADDR/PREFIX); INTERFACE is where it appears.
	VIP       string `cfg:"VIP"`
	Interface string `cfg:"INTERFACE"`
	// Metaloggers are the metalogger hosts, HOST or HOST:SSHPORT,
	// separated by commas or spaces; a majority must be fenced before
	// this host's master may start.
	Metaloggers string        `cfg:"METALOGGERS"`
	SSHUser     string        `cfg:"SSH_USER"`
	SSHKey      string        `cfg:"SSH_KEY"`
	KnownHosts  string        `cfg:"SSH_KNOWN_HOSTS"`
	SSHTimeout  time.Duration `cfg:"SSH_TIMEOUT"`
	// MLDataPath and MLCommand are the metaloggers' DATA_PATH and the
	// path of mfsmetalogger on their hosts.
	MLDataPath string `cfg:"METALOGGER_DATA_PATH"`
	MLCommand  string `cfg:"METALOGGER_COMMAND"`
	// DataPath is the local master's DATA_PATH, where the restore
	// writes metadata.mfs.
	DataPath string `cfg:"DATA_PATH"`
	// MasterUnit is the systemd unit of the master; with it empty, the
	// master runs as a child: MasterCommand, split on spaces.
	MasterUnit    string `cfg:"MASTER_UNIT"`
	MasterCommand string `cfg:"MASTER_COMMAND"`
	// MasterAddr is the master's client address, checked to know that it
	// serves (the VIP works too, but a local address does not depend on
	// the CARP speaker).
	MasterAddr    string        `cfg:"MASTER_ADDR"`
	MasterTimeout time.Duration `cfg:"MASTER_START_TIMEOUT"`
	// DemoteCommand (split on spaces) or DemoteUnit (stopped over D-Bus)
	// gives the VIP away when the local master dies while holding it.
	DemoteCommand string `cfg:"DEMOTE_COMMAND"`
	DemoteUnit    string `cfg:"DEMOTE_UNIT"`
	// Holder names this host's claim on a term; "" is the host name.
	Holder string `cfg:"HOLDER"`
	// ARPProbes is how many ARP probes for the VIP go out before a
	// takeover; an answer from another host refuses it. 0 disables.
	ARPProbes int `cfg:"ARP_PROBES"`
	// StatusFile is where the state is published for `carpwatch status`.
	StatusFile string `cfg:"STATUS_FILE"`
}

// Defaults are what carpwatch runs with when the file says nothing.
func Defaults() Config {
	return Config{
		Interface:     "eth0",
		SSHUser:       "mfs",
		SSHKey:        "/etc/mfs/carpwatch.key",
		KnownHosts:    "/etc/mfs/carpwatch.known_hosts",
		SSHTimeout:    5 * time.Second,
		MLDataPath:    "/var/lib/mfs",
		MLCommand:     "mfsmetalogger",
		DataPath:      "/var/lib/mfs",
		MasterUnit:    "",
		MasterCommand: "mfsmaster -c /etc/mfs/mfsmaster.cfg",
		MasterAddr:    "127.0.0.1:9421",
		MasterTimeout: 60 * time.Second,
		ARPProbes:     3,
		StatusFile:    "/run/carpwatch.status",
	}
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	if _, err := c.vip(); err != nil {
		return err
	}
	hosts, err := c.metaloggers()
	switch {
	case err != nil:
		return err
	case len(hosts) == 0:
		return errors.New("METALOGGERS is empty: carpwatch fences a majority of them before it starts a master")
	case c.Interface == "":
		return errors.New("INTERFACE is empty")
	case c.DataPath == "" || c.MLDataPath == "":
		return errors.New("DATA_PATH and METALOGGER_DATA_PATH must be set")
	case c.MasterUnit == "" && strings.TrimSpace(c.MasterCommand) == "":
		return errors.New("set MASTER_UNIT (systemd) or MASTER_COMMAND (a child process)")
	case c.SSHTimeout <= 0 || c.MasterTimeout <= 0:
		return errors.New("SSH_TIMEOUT and MASTER_START_TIMEOUT must be positive")
	case c.ARPProbes < 0:
		return fmt.Errorf("ARP_PROBES %d is negative", c.ARPProbes)
	case c.StatusFile == "":
		return errors.New("STATUS_FILE is empty")
	}
	if _, _, err := net.SplitHostPort(c.MasterAddr); err != nil {
		return fmt.Errorf("MASTER_ADDR %q: %v", c.MasterAddr, err)
	}
	return nil
}

// vip parses VIP.
func (c *Config) vip() (netip.Addr, error) {
	v := strings.TrimSpace(c.VIP)
	if v == "" {
		return netip.Addr{}, errors.New("VIP is empty: name the virtual address the CARP speaker moves")
	}
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("VIP %q: not an address", v)
	}
	return a, nil
}

// mlHost is one metalogger host: a name and its SSH address.
type mlHost struct {
	Name string
	Addr string // host:port
}

// metaloggers parses METALOGGERS.
func (c *Config) metaloggers() ([]mlHost, error) {
	var out []mlHost
	seen := map[string]bool{}
	for f := range strings.FieldsFuncSeq(c.Metaloggers, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		host, port := f, "22"
		if h, p, err := net.SplitHostPort(f); err == nil {
			host, port = h, p
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
			return nil, fmt.Errorf("METALOGGERS: %q is not HOST or HOST:PORT", f)
		}
		addr := net.JoinHostPort(host, port)
		if seen[addr] {
			return nil, fmt.Errorf("METALOGGERS: %s is listed twice", addr)
		}
		seen[addr] = true
		out = append(out, mlHost{Name: host, Addr: addr})
	}
	return out, nil
}
