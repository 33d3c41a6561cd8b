// Package metarestore is mfsmetarestore: it rebuilds metadata.mfs from a
// dump and changelogs, offline, refusing to write anything it cannot prove
// consistent.
package metarestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/app/cliutil"
	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/restore"
)

// Exit codes, also listed in -h.
const (
	ExitOK      = 0
	ExitUsage   = 1 // bad flags or arguments
	ExitMissing = 2 // no dump found, or an input cannot be opened
	ExitGap     = 3 // changelogs miss a version range
	ExitRefused = 4 // corrupt or inconsistent input, conflicting entries, other metaid, replay mismatch
	ExitWrite   = 5 // the result could not be written
)

const description = `Rebuilds metadata from the newest dump and the changelogs that follow it.

   mfsmetarestore -m DUMP -o OUT CHANGELOG...
       start from DUMP, apply the given changelog files, write OUT.
   mfsmetarestore -a [-d DATADIR] [-o OUT]
       find the newest valid dump in DATADIR (metadata.mfs, metadata_ml.mfs
       and their .back.N copies) and every changelog.N.mfs and
       changelog_ml.N.mfs there; write DATADIR/metadata.mfs unless -o.

   Changelog files may overlap (a master's and several metaloggers'):
   identical entries count once; different entries for one version, a
   missing version range, a dump of another file system or an entry that
   does not reproduce its recorded result stop the restore, and nothing is
   written. Older copies of OUT are kept as OUT.back.N.

EXIT CODES:
   0  restored (or, with --dry-run, would restore)
   1  usage error
   2  no dump found, or an input file cannot be opened
   3  changelog gap: add changelog files from another metalogger or the master
   4  refused: corrupt or inconsistent input, conflicting changelogs,
      another metaid, or an entry whose replay differs from its record
   5  the result could not be written`

// Main runs mfsmetarestore with args (args[0] is the program name).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &cli.App{
		Name:        "mfsmetarestore",
		Usage:       "rebuild carpfs metadata from a dump and changelogs",
		UsageText:   "mfsmetarestore -m DUMP -o OUT CHANGELOG...\nmfsmetarestore -a [-d DATADIR] [-o OUT] [--dry-run]",
		Description: description,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "m", Usage: "dump to start from", TakesFile: true},
			&cli.StringFlag{Name: "o", Usage: "metadata file to write", TakesFile: true},
			&cli.BoolFlag{Name: "a", Usage: "find the dump and changelogs in the data directory"},
			&cli.StringFlag{Name: "d", Usage: "data directory for -a", Value: "/var/lib/mfs", TakesFile: true},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the version and term the restore reaches; write nothing"},
			&cli.BoolFlag{Name: "q", Usage: "no progress output"},
		},
	}
	return cliutil.Run(ctx, app, args, stdout, stderr, func(c *cli.Context) int { return run(ctx, c, stdout, stderr) })
}

func run(ctx context.Context, c *cli.Context, stdout, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := restore.Options{Logger: logger}
	if !c.Bool("q") {
		opts.Progress = func(p restore.Progress) { printProgress(stderr, p) }
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "mfsmetarestore: %s (see -h)\n", msg)
		return ExitUsage
	}
	var (
		res *restore.Result
		err error
		out = c.String("o")
	)
	switch {
	case c.Bool("a"):
		if c.IsSet("m") || c.NArg() > 0 {
			return usage("-a finds the dump and changelogs itself; do not combine it with -m or changelog arguments")
		}
		if out == "" {
			out = filepath.Join(c.String("d"), "metadata.mfs")
		}
		res, err = restore.Auto(ctx, c.String("d"), opts)
	case c.IsSet("m"):
		if out == "" && !c.Bool("dry-run") {
			return usage("-m needs -o OUT (or --dry-run)")
		}
		res, err = restore.Run(ctx, c.String("m"), c.Args().Slice(), opts)
	default:
		return usage("give -m DUMP -o OUT CHANGELOG... or -a")
	}
	if err != nil {
		fmt.Fprintf(stderr, "mfsmetarestore: %v\nnothing was written\n", err)
		return exitCode(err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "mfsmetarestore: warning: %v\n", w)
	}
	st := res.State
	if c.Bool("dry-run") {
		fmt.Fprintf(stdout, "would reach version %d term %d (metaid %016x) from %s (version %d) and %d changelog entries\n",
			st.Version(), st.Term(), st.MetaID(), res.DumpPath, res.Dump.Version, res.Applied)
		return ExitOK
	}
	t0 := time.Now()
	h, err := metadump.Write(filepath.Dir(out), filepath.Base(out), st, metadump.Options{Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "mfsmetarestore: %v\n", err)
		return ExitWrite
	}
	fmt.Fprintf(stdout, "restored version %d term %d (metaid %016x): %s (version %d) + %d changelog entries; wrote %s (%d bytes) in %.2fs\n",
		h.Version, h.Term, h.MetaID, res.DumpPath, res.Dump.Version, res.Applied, out, h.Size,
		(res.LoadTime + res.ReplayTime + time.Since(t0)).Seconds())
	return ExitOK
}

func printProgress(w io.Writer, p restore.Progress) {
	secs := p.Elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.Done) / secs
	}
	switch {
	case p.Stage == "load":
		fmt.Fprintf(w, "mfsmetarestore: loaded %d dump records in %.1fs (%.0f/s)\n", p.Done, secs, rate)
	case p.Final:
		fmt.Fprintf(w, "mfsmetarestore: replayed %d changelog entries in %.1fs (%.0f/s), at version %d\n", p.Done, secs, rate, p.Version)
	default:
		fmt.Fprintf(w, "mfsmetarestore: replaying: %d entries, version %d, %.0f/s\n", p.Done, p.Version, rate)
	}
}

// exitCode maps an error to the documented exit codes. Everything that is
// neither a gap nor a missing input is a refusal: corrupt or inconsistent
// files, conflicting entries, another metaid, a replay that differs.
func exitCode(err error) int {
	var gap *changelog.GapError
	switch {
	case errors.As(err, &gap):
		return ExitGap
	case errors.Is(err, restore.ErrNoDump), errors.Is(err, os.ErrNotExist), errors.Is(err, os.ErrPermission):
		return ExitMissing
	}
	return ExitRefused
}
