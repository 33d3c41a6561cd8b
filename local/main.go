// Command mfslocal runs a whole carpfs cluster on this host: a master,
// three chunkservers and a FUSE mount. See internal/app/local.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carpfs/carpfs/internal/app/local"
)

func main() {
	// SIGHUP too: a closed terminal must stop the cluster in order, not
	// leave its daemons behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := local.Main(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
