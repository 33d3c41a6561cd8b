package fetch

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
)

// Defaults for Host fields left empty.
const (
	DefaultCommand  = "mfsmetalogger"
	DefaultDataPath = "/var/lib/mfs" // mfsmetalogger's own default DATA_PATH
	DefaultPort     = "22"
)

// Host is one metalogger host as carpwatch is configured to reach it.
type Host struct {
	// Name identifies the metalogger in errors, logs and Dir. It must be
	// a plain name: letters, digits, '.', '_' and '-'.
	Name string
	// Addr is host:port of its SSH server; a bare host means port 22.
	// known_hosts is matched against this host (and port, when not 22).
	Addr string
	User string
	// KeyFile is the private key to log in with, unencrypted, in any
	// format golang.org/x/crypto/ssh reads (OpenSSH, PEM).
	KeyFile string
	// KnownHosts is the known_hosts file the host key must be in.
	KnownHosts string
	// DataPath is the metalogger's DATA_PATH on the host; empty means
	// DefaultDataPath. It is passed to the command with -d and listed
	// over SFTP.
	DataPath string
	// Command is mfsmetalogger's path on the host; empty means
	// DefaultCommand, found through the remote shell's PATH.
	Command string
}

// WithDefaults returns h with empty optional fields set.
func (h Host) WithDefaults() Host {
	if h.DataPath == "" {
		h.DataPath = DefaultDataPath
	}
	if h.Command == "" {
		h.Command = DefaultCommand
	}
	if _, _, err := net.SplitHostPort(h.Addr); err != nil && h.Addr != "" {
		h.Addr = net.JoinHostPort(strings.Trim(h.Addr, "[]"), DefaultPort)
	}
	return h
}

// Validate reports settings that cannot work. It checks h as given; call
// it on WithDefaults' result to allow the optional fields to be empty.
func (h Host) Validate() error {
	if err := checkName(h.Name); err != nil {
		return err
	}
	prefix := "metalogger " + h.Name + ": "
	switch {
	case h.Addr == "":
		return errors.New(prefix + "no SSH address")
	case h.User == "":
		return errors.New(prefix + "no SSH user")
	case h.KeyFile == "":
		return errors.New(prefix + "no SSH key file")
	case h.KnownHosts == "":
		return errors.New(prefix + "no known_hosts file: host keys are always checked")
	case h.DataPath == "" || !strings.HasPrefix(h.DataPath, "/"):
		return fmt.Errorf("%sDATA_PATH %q: want an absolute path", prefix, h.DataPath)
	case h.Command == "":
		return errors.New(prefix + "no mfsmetalogger command")
	}
	if _, _, err := net.SplitHostPort(h.Addr); err != nil {
		return fmt.Errorf("%saddress %q: %v", prefix, h.Addr, err)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("metalogger name %q: want a plain name", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("metalogger name %q: only letters, digits, '.', '_' and '-' may be used", name)
		}
	}
	return nil
}

// FetchedDir is the directory, inside the local DATA_PATH, that holds one
// subdirectory of fetched files per metalogger.
const FetchedDir = "fetched"

// Dir is where files fetched from the metalogger called name go:
// dataPath/fetched/name. restore.Scan of dataPath does not look into it.
func Dir(dataPath, name string) string {
	return filepath.Join(dataPath, FetchedDir, name)
}
