package main

import (
	"os"
	"syscall"
)

// fadviseDontNeed drops f's pages from the page cache (POSIX_FADV_DONTNEED).
func fadviseDontNeed(f *os.File) {
	st, err := f.Stat()
	if err != nil {
		return
	}
	syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, uintptr(st.Size()), 4, 0, 0)
}
