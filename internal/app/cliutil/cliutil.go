// Package cliutil is what every carpfs binary's Main does the same way:
// run a urfave/cli app whose action returns an exit code, report usage
// errors in one line (exit 1) instead of a page of help, and parse
// HOST:PORT flags.
package cliutil

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/config"
)

// Run runs app with args. action gives the exit code; a flag or argument
// error is printed as "NAME: error" and gives 1.
func Run(ctx context.Context, app *cli.App, args []string, stdout, stderr io.Writer, action func(*cli.Context) int) int {
	code := 0
	app.Writer, app.ErrWriter = stdout, stderr
	app.HideHelpCommand = true
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return err }
	app.Action = func(c *cli.Context) error {
		StartPprof()
		code = action(c)
		return nil
	}
	if err := app.RunContext(ctx, args); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", app.Name, err)
		return 1
	}
	return code
}

// LoadConfig fills cfg (a pointer to a struct with cfg tags) from the
// file named by the -c flag, a missing file leaving cfg as it is, and
// sets *dataPath from the -d flag when given.
func LoadConfig(c *cli.Context, cfg any, dataPath *string) error {
	f, err := config.LoadOptional(c.String("c"))
	if err != nil {
		return err
	}
	if err := config.Bind(f, cfg); err != nil {
		return err
	}
	if d := c.String("d"); d != "" {
		*dataPath = d
	}
	return nil
}

// HostPort splits the value of flag, "HOST:PORT" with an empty host
// meaning every address.
func HostPort(flag, s string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w", flag, s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: bad port", flag, s)
	}
	return host, uint16(p), nil
}
