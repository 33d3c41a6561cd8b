// Command mfsmount is the carpfs FUSE client; linked as mount.mfs it is
// mount(8)'s helper for the "mfs" type. See internal/app/mount.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carpfs/carpfs/internal/app/mount"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mount.Main(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
