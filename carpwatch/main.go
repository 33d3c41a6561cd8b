// Command carpwatch starts a carpfs master where the CARP VIP is. See
// internal/app/carpwatch.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/carpfs/carpfs/internal/app/carpwatch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := carpwatch.Main(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
