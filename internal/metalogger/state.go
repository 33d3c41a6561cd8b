package metalogger

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"

	"github.com/carpfs/carpfs/internal/fsutil"
)

// StateFile is the name, in DATA_PATH, of what a metalogger must never
// forget: the highest term it accepted and for whom, without which a
// fenced master could get entries accepted again after a restart; its
// identity, so the master counts it once; the file system; and a lower
// bound of the commit point, below which nothing it holds is ever cut.
//
// The file is one line of JSON followed by a space and the CRC-32C of
// the JSON as 8 hex digits. It is replaced atomically. A file that does
// not parse or fails its CRC is an error, not a fresh start.
const StateFile = "metalogger.state"

// stateFormat is the version of StateFile's JSON this build writes and
// reads.
const stateFormat = 1

// State is the persisted part of a metalogger.
type State struct {
	Format    int    `json:"format"`
	ID        string `json:"id"`
	MetaID    uint64 `json:"metaid"`
	Term      uint64 `json:"term"`
	Holder    string `json:"holder"`
	Committed uint64 `json:"committed"`
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func (s State) encode() []byte {
	s.Format = stateFormat
	body, _ := json.Marshal(s) // plain fields: cannot fail
	return fmt.Appendf(nil, "%s %08x\n", body, crc32.Checksum(body, crcTable))
}

// LoadState reads dir's state file; a missing file gives a new identity
// (not yet saved).
func LoadState(dir, name string) (State, bool, error) {
	path := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var r [4]byte
		if _, err := rand.Read(r[:]); err != nil {
			return State{}, false, err
		}
		return State{ID: name + "-" + hex.EncodeToString(r[:])}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("load metalogger state: %w", err)
	}
	line := strings.TrimSuffix(string(b), "\n")
	i := strings.LastIndexByte(line, ' ')
	var s State
	var crc uint32
	if i < 0 {
		return State{}, false, fmt.Errorf("load metalogger state: %s: no checksum in %q", path, line)
	}
	body := []byte(line[:i])
	if _, err := fmt.Sscanf(line[i+1:], "%08x", &crc); err != nil || crc != crc32.Checksum(body, crcTable) {
		return State{}, false, fmt.Errorf("load metalogger state: %s: checksum mismatch; restore the file from a backup (removing it would forget the accepted term)", path)
	}
	if err := json.Unmarshal(body, &s); err != nil || s.ID == "" {
		return State{}, false, fmt.Errorf("load metalogger state: %s: unreadable: %q", path, line)
	}
	if s.Format == 0 {
		s.Format = 1 // written before the field existed: the first format
	}
	if s.Format != stateFormat {
		return State{}, false, fmt.Errorf("load metalogger state: %s has format %d, this mfsmetalogger reads format %d: upgrade it", path, s.Format, stateFormat)
	}
	return s, true, nil
}

// SaveState replaces dir's state file atomically.
func SaveState(dir string, s State) error {
	if err := fsutil.WriteFileAtomic(dir, StateFile, s.encode(), 0o644); err != nil {
		return fmt.Errorf("save metalogger state: %w", err)
	}
	return nil
}
