package chunkserver

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"

	"github.com/carpfs/carpfs/internal/fsutil"
)

// StateFile is the name, in DATA_PATH, of the file that keeps what a
// chunkserver must not forget across restarts: the highest master term
// it has seen, so that a master that was replaced is refused even by a
// chunkserver that restarted since, and the file system it belongs to,
// so that its chunks are never handed to the master of another one.
//
// The file is one line of text:
//
//	carpfs-chunkserver-state v1 metaid=<16 hex> term=<decimal> crc=<8 hex>
//
// where crc is the CRC-32C of everything before " crc=". It is replaced
// atomically (temp file, fsync, rename, fsync of the directory). A file
// that does not parse or fails its CRC is an error, not a fresh start:
// forgetting the term would let a stale master back in.
const StateFile = "chunkserver.state"

// state is the persisted part of a chunkserver's identity.
type state struct {
	MetaID uint64
	Term   uint64
}

const statePrefix = "carpfs-chunkserver-state v1"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func (s state) encode() []byte {
	body := fmt.Sprintf("%s metaid=%016x term=%d", statePrefix, s.MetaID, s.Term)
	return fmt.Appendf(nil, "%s crc=%08x\n", body, crc32.Checksum([]byte(body), crcTable))
}

// loadState reads dir's state file; a missing file is the zero state.
func loadState(dir string) (state, error) {
	path := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("load chunkserver state: %w", err)
	}
	line := strings.TrimSuffix(string(b), "\n")
	body, crcText, ok := strings.Cut(line, " crc=")
	var s state
	var crc uint32
	if ok {
		_, err = fmt.Sscanf(body, statePrefix+" metaid=%x term=%d", &s.MetaID, &s.Term)
		if err == nil {
			_, err = fmt.Sscanf(crcText, "%x", &crc)
		}
	}
	switch {
	case !ok || err != nil:
		return state{}, fmt.Errorf("load chunkserver state: %s: unreadable line %q", path, line)
	case crc != crc32.Checksum([]byte(body), crcTable) || string(s.encode()) != string(b):
		return state{}, fmt.Errorf("load chunkserver state: %s: checksum mismatch; restore it or remove it to accept any master", path)
	}
	return s, nil
}

// saveState replaces dir's state file atomically.
func saveState(dir string, s state) error {
	if err := fsutil.WriteFileAtomic(dir, StateFile, s.encode(), 0o644); err != nil {
		return fmt.Errorf("save chunkserver state: %w", err)
	}
	return nil
}
