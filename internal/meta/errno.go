package meta

import (
	"strconv"
	"syscall"
)

// errnoNames are the errnos Apply can return, by their C names.
var errnoNames = map[syscall.Errno]string{
	syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.EBADF: "EBADF",
	syscall.EBUSY: "EBUSY", syscall.EEXIST: "EEXIST", syscall.ENOTDIR: "ENOTDIR",
	syscall.EISDIR: "EISDIR", syscall.EINVAL: "EINVAL", syscall.EFBIG: "EFBIG",
	syscall.ENOSPC: "ENOSPC", syscall.EMLINK: "EMLINK", syscall.ERANGE: "ERANGE",
	syscall.ENAMETOOLONG: "ENAMETOOLONG", syscall.ENOTEMPTY: "ENOTEMPTY",
	syscall.ENODATA: "ENODATA", syscall.E2BIG: "E2BIG",
}

// ErrnoName is the C name of e ("ENOENT"), or "errno N" for one Apply never
// returns.
func ErrnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return "errno " + strconv.Itoa(int(e))
}
