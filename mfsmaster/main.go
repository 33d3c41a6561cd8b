// Command mfsmaster is the carpfs metadata master. See internal/app/master.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carpfs/carpfs/internal/app/master"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := master.Main(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
