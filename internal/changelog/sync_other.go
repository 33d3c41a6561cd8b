//go:build !linux

package changelog

import "os"

// fdatasync falls back to a full fsync where the platform has no fdatasync
// in the syscall package.
func fdatasync(f *os.File) error { return f.Sync() }
