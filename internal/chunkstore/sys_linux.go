package chunkstore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// fsSpace reports a file system's size and the bytes an unprivileged
// writer may still use. Like MooseFS, the total leaves out the blocks
// reserved for root, which chunks can never use either.
func fsSpace(path string) (total, avail int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := uint64(st.Frsize)
	if bs == 0 {
		bs = uint64(st.Bsize)
	}
	reserved := st.Bfree - st.Bavail
	return int64(bs * (st.Blocks - reserved)), int64(bs * st.Bavail), nil
}

// lockFile takes an exclusive lock that a second Store, in this process
// or another, cannot also take. flock locks belong to the open file, not
// the process, so two Stores in one test see each other.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	if err != nil {
		return fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	return nil
}

// deviceOf identifies the file system path lives on.
func deviceOf(path string) (uint64, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Dev), true
}

// startWriteback asks the kernel to begin writing [off, off+n) of f to
// disk now, without waiting for it, so that a later fsync finds little
// left to do. It is only a hint: failures are ignored.
func startWriteback(f *os.File, off, n int64) {
	_ = syscall.SyncFileRange(int(f.Fd()), off, n, 0x2 /* SYNC_FILE_RANGE_WRITE */)
}
