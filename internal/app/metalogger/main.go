// Package metalogger is mfsmetalogger: it connects to the master's
// metalogger port, stores the changelog it streams, acknowledges what
// is on disk, and keeps a replica of the metadata with periodic dumps
// (see internal/metalogger). Two subcommands work on the data directory
// from the same host, for operators and for carpwatch over SSH:
//
//	mfsmetalogger fence --term T [--holder H]   raise the accepted term
//	mfsmetalogger status                        show the state
//
// Both print one line of JSON: the metalogger's id, the accepted term and
// holder, its last entry (version, last_term), its commit point, replica
// and lag. A running daemon answers on its admin socket; with none, the
// state file is read or changed directly, under the daemon's lock.
package metalogger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/app/cliutil"
	"github.com/carpfs/carpfs/internal/metalogger"
)

// Config is mfsmetalogger.cfg. Keys follow MooseFS where MooseFS has one.
type Config struct {
	DataPath       string        `cfg:"DATA_PATH"`
	MasterHost     string        `cfg:"MASTER_HOST"`
	MasterPort     uint16        `cfg:"MASTER_PORT"`
	MasterTimeout  time.Duration `cfg:"MASTER_TIMEOUT"`
	ReconnectDelay time.Duration `cfg:"MASTER_RECONNECTION_DELAY"`
	AuthCode       string        `cfg:"AUTH_CODE"`
	BackLogs       int           `cfg:"BACK_LOGS"`
	// DumpFreq is how often, in hours, the replica is dumped
	// (META_DOWNLOAD_FREQ in MooseFS, which downloaded the master's dump
	// that often; here the replica is always current).
	DumpFreq     int    `cfg:"META_DOWNLOAD_FREQ"`
	ChangelogMax int64  `cfg:"CHANGELOG_MAX_SIZE"`
	Name         string `cfg:"NAME"`
}

// Defaults are what a metalogger runs with when no file says otherwise.
func Defaults() Config {
	return Config{
		DataPath:       "/var/lib/mfs",
		MasterHost:     "mfsmaster",
		MasterPort:     9419,
		MasterTimeout:  metalogger.DefaultTimeout,
		ReconnectDelay: metalogger.DefaultReconnectDelay,
		BackLogs:       50,
		DumpFreq:       1,
		ChangelogMax:   metalogger.DefaultChangelogSize,
	}
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.DataPath == "":
		return errors.New("DATA_PATH is empty")
	case c.MasterHost == "":
		return errors.New("MASTER_HOST is empty")
	case c.MasterTimeout <= 0:
		return fmt.Errorf("MASTER_TIMEOUT %s: want a positive time", c.MasterTimeout)
	case c.ReconnectDelay <= 0:
		return fmt.Errorf("MASTER_RECONNECTION_DELAY %s: want a positive time", c.ReconnectDelay)
	case c.BackLogs < 1:
		return fmt.Errorf("BACK_LOGS %d: want at least 1", c.BackLogs)
	case c.DumpFreq < 1:
		return fmt.Errorf("META_DOWNLOAD_FREQ %d: want at least 1 (hours)", c.DumpFreq)
	case c.ChangelogMax < 1<<20:
		return fmt.Errorf("CHANGELOG_MAX_SIZE %d is below 1 MiB", c.ChangelogMax)
	}
	return nil
}

var commonFlags = []cli.Flag{
	&cli.StringFlag{Name: "c", Usage: "configuration file (a missing file means defaults)", Value: "/etc/mfs/mfsmetalogger.cfg"},
	&cli.StringFlag{Name: "d", Usage: "data directory (overrides DATA_PATH)"},
}

// Main runs mfsmetalogger with args (args[0] is the program name) until
// ctx ends, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	code := -1 // set by a subcommand
	app := &cli.App{
		Name:      "mfsmetalogger",
		Usage:     "carpfs metalogger: a quorum copy of the master's changelog and a replica of its metadata",
		UsageText: "mfsmetalogger [-c CFGFILE] [-d DATA_PATH] [--master HOST:PORT] [--dump-interval D]\n   mfsmetalogger fence [-c CFGFILE] [-d DATA_PATH] --term T [--holder H]\n   mfsmetalogger status [-c CFGFILE] [-d DATA_PATH]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "master", Usage: "master's metalogger address HOST:PORT (overrides MASTER_HOST/PORT)"},
			&cli.DurationFlag{Name: "dump-interval", Usage: "how often the replica is dumped (overrides META_DOWNLOAD_FREQ)"},
		}, commonFlags...),
		Commands: []*cli.Command{
			{
				Name:  "fence",
				Usage: "raise the accepted term, ending the link to an older master; prints the state as JSON",
				Flags: append([]cli.Flag{
					&cli.Uint64Flag{Name: "term", Usage: "the term to accept", Required: true},
					&cli.StringFlag{Name: "holder", Usage: "the master the term is for (it must grant with the same name)"},
				}, commonFlags...),
				Action: func(c *cli.Context) error { code = admin(c, stdout, stderr, "fence"); return nil },
			},
			{
				Name:   "status",
				Usage:  "print the state as JSON",
				Flags:  commonFlags,
				Action: func(c *cli.Context) error { code = admin(c, stdout, stderr, "status"); return nil },
			},
		},
	}
	rc := cliutil.Run(ctx, app, args, stdout, stderr, func(c *cli.Context) int { return run(ctx, c, stderr) })
	if rc == 0 && code >= 0 {
		return code
	}
	return rc
}

func loadConfig(c *cli.Context) (Config, error) {
	cfg := Defaults()
	err := cliutil.LoadConfig(c, &cfg, &cfg.DataPath)
	if err != nil {
		return cfg, err
	}
	if m := c.String("master"); m != "" {
		if cfg.MasterHost, cfg.MasterPort, err = cliutil.HostPort("--master", m); err != nil {
			return cfg, err
		}
	}
	return cfg, cfg.Validate()
}

func run(ctx context.Context, c *cli.Context, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := loadConfig(c)
	if err != nil {
		log.Error("configuration refused", "err", err)
		return 1
	}
	interval := time.Duration(cfg.DumpFreq) * time.Hour
	if d := c.Duration("dump-interval"); d > 0 {
		interval = d
	}
	name := cfg.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	ml, err := metalogger.Open(ctx, metalogger.Config{
		Master: net.JoinHostPort(cfg.MasterHost, strconv.Itoa(int(cfg.MasterPort))),
		Dir:    cfg.DataPath, Name: name, AuthCode: []byte(cfg.AuthCode),
		Timeout: cfg.MasterTimeout, ReconnectDelay: cfg.ReconnectDelay, DumpInterval: interval,
		ChangelogMaxSize: cfg.ChangelogMax, Keep: cfg.BackLogs, Logger: log,
	})
	if err != nil {
		log.Error("metalogger could not start", "err", err)
		return 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln, err := ml.ListenAdmin()
	if err != nil {
		log.Error("metalogger could not start", "err", err)
		ml.Close()
		return 1
	}
	adminDone := make(chan error, 1)
	go func() { adminDone <- ml.ServeAdmin(ctx, ln) }()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("could not tell systemd we are ready", "err", err)
	}
	log.Info("metalogger running", "master", net.JoinHostPort(cfg.MasterHost, strconv.Itoa(int(cfg.MasterPort))), "dir", cfg.DataPath)
	runErr := ml.Run(ctx)
	cancel()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	code := 0
	if err := <-adminDone; err != nil {
		log.Error("admin socket failed", "err", err)
		code = 1
	}
	if runErr != nil {
		log.Error("metalogger stopped", "err", runErr)
		code = 1
	}
	if err := ml.Close(); err != nil {
		log.Error("metalogger did not stop cleanly", "err", err)
		return 1
	}
	log.Info("metalogger stopped")
	return code
}

// admin runs fence or status against the daemon, or on the files when
// no daemon runs, and prints the state.
func admin(c *cli.Context, stdout, stderr io.Writer, op string) int {
	cfg, err := loadConfig(c)
	if err != nil {
		fmt.Fprintf(stderr, "mfsmetalogger %s: %v\n", op, err)
		return 1
	}
	term, holder := c.Uint64("term"), c.String("holder")
	if op == "fence" && term == 0 {
		fmt.Fprintf(stderr, "mfsmetalogger fence: --term must be at least 1\n")
		return 1
	}
	st, err := metalogger.Ask(cfg.DataPath, op, term, holder)
	if errors.Is(err, metalogger.ErrNotRunning) {
		if op == "fence" {
			st, err = metalogger.FenceOffline(cfg.DataPath, term, holder)
		} else {
			st, err = metalogger.StatusOffline(cfg.DataPath)
		}
	}
	if st.ID != "" {
		b, _ := json.Marshal(st)
		fmt.Fprintf(stdout, "%s\n", b)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mfsmetalogger %s: %v\n", op, err)
		return 1
	}
	return 0
}
