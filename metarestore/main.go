// Command mfsmetarestore rebuilds carpfs metadata from a dump and
// changelogs. See internal/app/metarestore.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carpfs/carpfs/internal/app/metarestore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := metarestore.Main(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
