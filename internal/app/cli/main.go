// Package cli is mfscli, carpfs's administration tool. For now it reads
// and changes goals, the number of copies (or the xyz placement) kept of
// each file's chunks:
//
//	mfscli goal get [-r] PATH...
//	mfscli goal set [-r] GOAL PATH...
//
// and, as MooseFS users know them, `mfsgetgoal [-r] PATH...` and
// `mfssetgoal [-r] GOAL PATH...`: the same program called by those names
// (the Makefile installs them as symbolic links to mfscli).
//
// PATHs are files and directories on a mounted carpfs. The tool asks the
// mount, not the master: mfsmount answers the virtual extended attribute
// carpfs.goal (GoalXattr) on every inode by asking the master. So the
// kernel has resolved the path and checked permissions as for any
// access, the tool needs no session, address or password of its own, and
// `getfattr -n carpfs.goal FILE` / `setfattr -n carpfs.goal -v 3 FILE`
// work too. A new file or directory takes its parent directory's goal.
package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	ucli "github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/app/cliutil"
	"github.com/carpfs/carpfs/internal/replication"
)

// Main runs mfscli with args (args[0] is the program name; the names
// mfsgetgoal and mfssetgoal run those commands) and returns the exit
// code: 0 if everything asked was done, 1 otherwise.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "mfscli"
	if len(args) > 0 {
		name = filepath.Base(args[0])
	}
	switch name {
	case "mfsgetgoal":
		return cliutil.Run(ctx, goalGetApp(name), args, stdout, stderr, func(c *ucli.Context) int {
			return runGet(c, stdout, stderr)
		})
	case "mfssetgoal":
		return cliutil.Run(ctx, goalSetApp(name), args, stdout, stderr, func(c *ucli.Context) int {
			return runSet(c, stdout, stderr)
		})
	}

	code := 0
	usageErr := func(_ *ucli.Context, err error, _ bool) error { return err }
	get, set := goalGetApp("get"), goalSetApp("set")
	app := &ucli.App{
		Name:      "mfscli",
		Usage:     "carpfs administration",
		UsageText: "mfscli goal get [-r] PATH...\n   mfscli goal set [-r] GOAL PATH...",
		Commands: []*ucli.Command{{
			Name:         "goal",
			Usage:        "read or change the goal (copies kept) of files on a carpfs mount",
			OnUsageError: usageErr,
			Subcommands: []*ucli.Command{{
				Name: "get", Usage: get.Usage, UsageText: get.UsageText, Flags: get.Flags, OnUsageError: usageErr,
				Action: func(c *ucli.Context) error { code = runGet(c, stdout, stderr); return nil },
			}, {
				Name: "set", Usage: set.Usage, UsageText: set.UsageText, Flags: set.Flags, OnUsageError: usageErr,
				Action: func(c *ucli.Context) error { code = runSet(c, stdout, stderr); return nil },
			}},
			Action: func(c *ucli.Context) error {
				return fmt.Errorf("goal: want get or set (see mfscli goal -h)")
			},
		}},
	}
	if rc := cliutil.Run(ctx, app, args, stdout, stderr, func(*ucli.Context) int {
		fmt.Fprintln(stderr, "mfscli: want a command: goal (see mfscli -h)")
		return 1
	}); rc != 0 {
		return rc
	}
	return code
}

func goalGetApp(name string) *ucli.App {
	return &ucli.App{
		Name:      name,
		Usage:     "print the goal of files and directories on a carpfs mount",
		UsageText: name + " [-r] PATH...",
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "r", Usage: "count the goals of everything below each directory"},
		},
	}
}

func goalSetApp(name string) *ucli.App {
	return &ucli.App{
		Name:  name,
		Usage: "set the goal of files and directories on a carpfs mount",
		UsageText: name + " [-r] GOAL PATH...\n\n" +
			"   GOAL is a copy count 1-9, or three digits xyz: x copies in other data centers,\n" +
			"   y in other racks, z on other servers of the same rack (x+y+z+1 copies).",
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "r", Usage: "also set it on everything below each directory"},
		},
	}
}

func runGet(c *ucli.Context, stdout, stderr io.Writer) int {
	if c.NArg() == 0 {
		fmt.Fprintf(stderr, "%s: want at least one PATH\n", c.App.Name)
		return 1
	}
	if !goalGet(c.Args().Slice(), c.Bool("r"), stdout, stderr) {
		return 1
	}
	return 0
}

func runSet(c *ucli.Context, stdout, stderr io.Writer) int {
	if c.NArg() < 2 {
		fmt.Fprintf(stderr, "%s: want GOAL and at least one PATH\n", c.App.Name)
		return 1
	}
	g, err := replication.ParseGoal(c.Args().First())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.App.Name, err)
		return 1
	}
	if !goalSet(g, c.Args().Tail(), c.Bool("r"), stdout, stderr) {
		return 1
	}
	return 0
}
