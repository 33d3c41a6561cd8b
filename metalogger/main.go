// Command mfsmetalogger is the carpfs metalogger. See
// internal/app/metalogger.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carpfs/carpfs/internal/app/metalogger"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := metalogger.Main(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
