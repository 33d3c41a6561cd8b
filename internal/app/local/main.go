// Package local is mfslocal: a whole carpfs cluster on one host, for
// trying carpfs and for developing it. `mfslocal up` runs mfsmaster,
// three mfsmetaloggers, three mfschunkservers and mfsmount, found next
// to its own executable, as its child processes on 127.0.0.1, each step
// started only once the one before answers:
//
//   - the master, with a quorum of three metaloggers (--metaloggers 3),
//     and the metaloggers at once: the master serves nothing until two
//     of them have accepted its term, and acknowledges each operation
//     only once two have stored it. Up waits until a session with the
//     master answers statfs, then until every metalogger says on its
//     admin socket that it follows the master;
//   - the chunkservers, until the master has logged each one's
//     registration (the client link has no query for chunkservers yet);
//   - the mount, until statfs(2) of the mount point reaches FUSE.
//
// It then sets the root directory's goal and prints where the file
// system is mounted. Ctrl-C (SIGINT, SIGTERM, SIGHUP) stops everything in
// order: unmount, mfsmount, chunkservers, the master, with SIGTERM so
// that it writes metadata.mfs, and last the metaloggers, so that they
// store every entry the master wrote until it stopped. `mfslocal down`
// does the same from another shell by signalling the `up` process.
//
// Everything lives in the state directory (-d, /var/tmp/carpfs-local by
// default), so a later `up` finds the file system as it was left:
//
//	mfslocal.pid        the PID of the running `mfslocal up`
//	mfslocal.state      JSON: each process's PID, start time and argv
//	mfslocal.lock       held by the running `up`
//	mfsexports.cfg      written once: 127.0.0.1 may mount / read-write
//	mfsmaster.cfg       optional, read by the master if present
//	master/             the master's DATA_PATH (metadata, changelogs)
//	metaloggerN/        metalogger N's DATA_PATH (changelog_ml.*.mfs,
//	                    metadata_ml.mfs, metalogger.state, the admin
//	                    socket); an optional mfsmetalogger.cfg is read
//	                    if present
//	chunkserverN/       chunkserver N's DATA_PATH; its disk is hdd/, an
//	                    optional mfschunkserver.cfg is read if present
//	mnt/                the mount point (unless --mount)
//	log/*.log           each daemon's output, appended run after run
//
// A PID from the state file is signalled only after /proc shows the
// same start time and command line, so a number reused by another
// program is never hit; nothing is ever killed by name.
//
// Ports are MooseFS's defaults (9421 clients, 9420 chunkservers, 9419
// metaloggers, 9422 and up for the chunkservers' data) when free on
// 127.0.0.1, else ports the kernel picks; --any-ports always takes the
// kernel's, so that several clusters (tests, say) run side by side.
package local

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/app/cliutil"
	"github.com/carpfs/carpfs/internal/replication"
)

// Main runs mfslocal with args (args[0] is the program name); `up` runs
// until ctx ends. It returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	code := 0
	self := "mfslocal"
	if len(args) > 0 && strings.Contains(args[0], "/") {
		self = args[0]
	}
	dirFlag := &cli.StringFlag{Name: "d", Usage: "state directory", Value: DefaultDir}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mfslocal: %v\n", err)
		return 1
	}
	usageErr := func(_ *cli.Context, err error, _ bool) error { return err }
	app := &cli.App{
		Name:      "mfslocal",
		Usage:     "a whole carpfs cluster on this host: master, metaloggers, chunkservers and a FUSE mount",
		UsageText: "mfslocal up [-d STATEDIR] [--chunkservers N] [--goal GOAL] [--mount DIR] [--any-ports]\n   mfslocal down [-d STATEDIR]\n   mfslocal status [-d STATEDIR]",
		Commands: []*cli.Command{{
			Name:         "up",
			Usage:        "start the cluster and run it until Ctrl-C or `mfslocal down`",
			OnUsageError: usageErr,
			Flags: []cli.Flag{
				dirFlag,
				&cli.IntFlag{Name: "chunkservers", Usage: "how many chunkservers", Value: 3},
				&cli.StringFlag{Name: "goal", Usage: "goal of the root directory: 1-9 copies, or xyz", Value: "2"},
				&cli.StringFlag{Name: "mount", Usage: "mount point (default STATEDIR/mnt)"},
				&cli.BoolFlag{Name: "any-ports", Usage: "use ports the kernel picks, not 9419-9424 (for several clusters at once)"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return fmt.Errorf("up: unexpected argument %q", c.Args().First())
				}
				goal, err := replication.ParseGoal(c.String("goal"))
				if err != nil {
					return fmt.Errorf("--goal: %w", err)
				}
				err = Up(ctx, Options{
					Dir: c.String("d"), Mount: c.String("mount"), Chunkservers: c.Int("chunkservers"),
					Goal: goal, AnyPorts: c.Bool("any-ports"), Self: self, Out: stdout,
				})
				if err != nil {
					code = fail(err)
				}
				return nil
			},
		}, {
			Name:         "down",
			Usage:        "stop the cluster that `mfslocal up` runs",
			OnUsageError: usageErr,
			Flags:        []cli.Flag{dirFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return fmt.Errorf("down: unexpected argument %q", c.Args().First())
				}
				if err := Down(c.String("d"), stdout); err != nil {
					code = fail(err)
				}
				return nil
			},
		}, {
			Name:         "status",
			Usage:        "show what runs; exit 0 only if all of it does",
			OnUsageError: usageErr,
			Flags:        []cli.Flag{dirFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return fmt.Errorf("status: unexpected argument %q", c.Args().First())
				}
				if err := Status(ctx, c.String("d"), stdout); err != nil {
					code = fail(err)
				}
				return nil
			},
		}},
	}
	rootCode := cliutil.Run(ctx, app, args, stdout, stderr, func(*cli.Context) int {
		fmt.Fprintln(stderr, "mfslocal: want a command: up, down or status (see mfslocal -h)")
		return 1
	})
	if rootCode != 0 {
		return rootCode
	}
	return code
}
