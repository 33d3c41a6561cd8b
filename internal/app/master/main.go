// Package master is mfsmaster: it loads (or recovers, or formats) the
// metadata in DATA_PATH and serves mounts on the client port, and
// chunkservers on theirs (a registry of servers and chunk copies), until
// it is told to stop, when it writes metadata.mfs.
//
// Recovery after a crash is automatic: the newest dump plus every
// changelog in DATA_PATH are replayed at start-up, so the MooseFS step
// `mfsmaster -a` is never needed (the flag is accepted and ignored).
package master

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/app/cliutil"
	"github.com/carpfs/carpfs/internal/exports"
	"github.com/carpfs/carpfs/internal/master"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
)

// Config is mfsmaster.cfg. Keys follow MooseFS where MooseFS has one.
type Config struct {
	DataPath    string `cfg:"DATA_PATH"`
	ExportsFile string `cfg:"EXPORTS_FILENAME"`
	ClientHost  string `cfg:"MATOCL_LISTEN_HOST"`
	ClientPort  uint16 `cfg:"MATOCL_LISTEN_PORT"`
	CSHost      string `cfg:"MATOCS_LISTEN_HOST"`
	CSPort      uint16 `cfg:"MATOCS_LISTEN_PORT"`
	MLHost      string `cfg:"MATOML_LISTEN_HOST"`
	MLPort      uint16 `cfg:"MATOML_LISTEN_PORT"`
	// Metaloggers is how many metaloggers the quorum has: a count, or
	// the list of their hosts (only those may connect). Empty or 0: no
	// quorum, entries are made durable by a local fsync.
	Metaloggers     string        `cfg:"METALOGGERS"`
	CommitTimeout   time.Duration `cfg:"COMMIT_TIMEOUT"`
	AuthCode        string        `cfg:"AUTH_CODE"`
	CommitMode      string        `cfg:"COMMIT_MODE"`
	SessionSustain  time.Duration `cfg:"SESSION_SUSTAIN_TIME"`
	ChangelogMax    int64         `cfg:"CHANGELOG_MAX_SIZE"`
	AuthClientsFlag bool          `cfg:"AUTH_CLIENTS"`
	// The replication loop (see master.ReplicatorConfig).
	LoopMaxCPS     int           `cfg:"CHUNKS_LOOP_MAX_CPS"`
	WriteRepLimit  int           `cfg:"CHUNKS_WRITE_REP_LIMIT"`
	ReadRepLimit   int           `cfg:"CHUNKS_READ_REP_LIMIT"`
	DelLimit       int           `cfg:"CHUNKS_DEL_LIMIT"`
	RepDelayInit   time.Duration `cfg:"REPLICATIONS_DELAY_INIT"`
	LoopNoDeletion bool          `cfg:"CHUNKS_NO_DELETE"`
}

// Defaults are what a master runs with when no file says otherwise.
func Defaults() Config {
	return Config{
		DataPath:       "/var/lib/mfs",
		ExportsFile:    "/etc/mfs/mfsexports.cfg",
		ClientHost:     "*",
		ClientPort:     9421,
		CSHost:         "*",
		CSPort:         9420,
		MLHost:         "*",
		MLPort:         9419,
		CommitTimeout:  master.DefaultCommitTimeout,
		SessionSustain: master.DefaultSessionGrace,
		ChangelogMax:   1 << 30,
		LoopMaxCPS:     master.DefaultLoopMaxCPS,
		WriteRepLimit:  master.DefaultWriteRepLimit,
		ReadRepLimit:   master.DefaultReadRepLimit,
		DelLimit:       master.DefaultDeleteLimit,
		RepDelayInit:   60 * time.Second,
	}
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.DataPath == "":
		return errors.New("DATA_PATH is empty")
	case c.CommitMode != "" && c.CommitMode != "sync" && c.CommitMode != "async" && c.CommitMode != "quorum":
		return fmt.Errorf("COMMIT_MODE %q: want quorum, sync or async", c.CommitMode)
	case c.CommitTimeout <= 0:
		return fmt.Errorf("COMMIT_TIMEOUT %s: want a positive time", c.CommitTimeout)
	case c.AuthClientsFlag && c.AuthCode == "":
		return errors.New("AUTH_CLIENTS needs an AUTH_CODE")
	case c.ChangelogMax < 1<<20:
		return fmt.Errorf("CHANGELOG_MAX_SIZE %d is below 1 MiB", c.ChangelogMax)
	case c.LoopMaxCPS < 1:
		return fmt.Errorf("CHUNKS_LOOP_MAX_CPS %d: want at least 1", c.LoopMaxCPS)
	case c.WriteRepLimit < 1:
		return fmt.Errorf("CHUNKS_WRITE_REP_LIMIT %d: want at least 1", c.WriteRepLimit)
	case c.ReadRepLimit < 1:
		return fmt.Errorf("CHUNKS_READ_REP_LIMIT %d: want at least 1", c.ReadRepLimit)
	case c.DelLimit < 1:
		return fmt.Errorf("CHUNKS_DEL_LIMIT %d: want at least 1", c.DelLimit)
	case c.RepDelayInit < 0:
		return fmt.Errorf("REPLICATIONS_DELAY_INIT %s is negative", c.RepDelayInit)
	}
	n, _, err := c.metaloggers()
	switch {
	case err != nil:
		return err
	case c.CommitMode == "quorum" && n == 0:
		return errors.New("COMMIT_MODE quorum needs METALOGGERS (a count or a list of hosts)")
	case c.CommitMode == "sync" && n > 0:
		return errors.New("COMMIT_MODE sync waits for the local disk only: with METALOGGERS set use quorum (the default) or async")
	}
	return nil
}

// metaloggers parses METALOGGERS: a count, or a list of hosts separated
// by commas or spaces.
func (c *Config) metaloggers() (int, []string, error) {
	v := strings.TrimSpace(c.Metaloggers)
	if v == "" {
		return 0, nil, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 || n > 99 {
			return 0, nil, fmt.Errorf("METALOGGERS %d: want 0 to 99", n)
		}
		return n, nil, nil
	}
	hosts := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	return len(hosts), hosts, nil
}

// commitMode is COMMIT_MODE with its default: quorum when there are
// metaloggers, else sync.
func (c *Config) commitMode() string {
	if c.CommitMode != "" {
		return c.CommitMode
	}
	if n, _, _ := c.metaloggers(); n > 0 {
		return "quorum"
	}
	return "sync"
}

func (c *Config) listenAddr() string { return joinListen(c.ClientHost, c.ClientPort) }

func (c *Config) csListenAddr() string { return joinListen(c.CSHost, c.CSPort) }

func (c *Config) mlListenAddr() string { return joinListen(c.MLHost, c.MLPort) }

func joinListen(host string, port uint16) string {
	if host == "*" {
		host = ""
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// Main runs mfsmaster with args (args[0] is the program name) until ctx
// ends, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &cli.App{
		Name:      "mfsmaster",
		Usage:     "carpfs metadata master",
		UsageText: "mfsmaster [-c CFGFILE] [-d DATA_PATH] [--listen HOST:PORT] [--cs-listen HOST:PORT]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "c", Usage: "configuration file (a missing file means defaults)", Value: "/etc/mfs/mfsmaster.cfg"},
			&cli.StringFlag{Name: "d", Usage: "data directory (overrides DATA_PATH)"},
			&cli.StringFlag{Name: "exports", Usage: "exports file (overrides EXPORTS_FILENAME)"},
			&cli.StringFlag{Name: "listen", Usage: "client address HOST:PORT (overrides MATOCL_LISTEN_HOST/PORT)"},
			&cli.StringFlag{Name: "cs-listen", Usage: "chunkserver address HOST:PORT (overrides MATOCS_LISTEN_HOST/PORT)"},
			&cli.StringFlag{Name: "ml-listen", Usage: "metalogger address HOST:PORT (overrides MATOML_LISTEN_HOST/PORT)"},
			&cli.StringFlag{Name: "metaloggers", Usage: "metaloggers in the quorum: a count or hosts (overrides METALOGGERS)"},
			&cli.StringFlag{Name: "commit-mode", Usage: "quorum, sync or async (overrides COMMIT_MODE)"},
			&cli.Uint64Flag{Name: "term", Usage: "serve under this term, already fenced on the metaloggers (carpwatch); default: the next free one", EnvVars: []string{"CARPFS_TERM"}},
			&cli.StringFlag{Name: "holder", Usage: "the name the term was fenced for (with --term)", EnvVars: []string{"CARPFS_HOLDER"}},
			&cli.BoolFlag{Name: "a", Usage: "accepted for MooseFS compatibility: recovery is always automatic"},
		},
	}
	return cliutil.Run(ctx, app, args, stdout, stderr, func(c *cli.Context) int { return run(ctx, c, stderr) })
}

func run(ctx context.Context, c *cli.Context, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := loadConfig(c)
	if err != nil {
		log.Error("configuration refused", "err", err)
		return 1
	}
	ex, err := exports.Load(cfg.ExportsFile)
	if err != nil {
		log.Error("exports refused", "err", err)
		return 1
	}
	var journal *master.Journal
	n, hosts, _ := cfg.metaloggers()
	if n > 0 {
		holder := c.String("holder")
		if holder == "" {
			holder = fmt.Sprintf("%s/%d", hostname(), time.Now().UnixNano())
		}
		journal, err = master.NewJournal(master.JournalConfig{
			Metaloggers: n, Hosts: hosts, Name: hostname(), AuthCode: []byte(cfg.AuthCode),
			Term: c.Uint64("term"), Holder: holder, Dir: cfg.DataPath, CommitTimeout: cfg.CommitTimeout, Logger: log,
		})
		if err != nil {
			log.Error("configuration refused", "err", err)
			return 1
		}
	} else if c.Uint64("term") != 0 {
		log.Error("configuration refused", "err", "--term needs METALOGGERS: a term is granted by metaloggers")
		return 1
	}
	opts := metastore.Options{
		Dir: cfg.DataPath, Logger: log, Async: cfg.commitMode() == "async", ChangelogMaxSize: cfg.ChangelogMax,
	}
	if journal != nil {
		opts.Replicator = journal
	}
	store, err := metastore.Open(ctx, opts)
	if err != nil {
		log.Error("metadata could not be loaded", "err", err)
		return 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if journal != nil {
		if err := startJournal(ctx, journal, store, cfg, log); err != nil {
			log.Error("master not started", "err", err)
			cancel()
			store.Close()
			return 1
		}
		go func() {
			select {
			case <-journal.Fenced():
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	term := func() uint64 {
		var t uint64
		store.Read(func(s *meta.State) { t = s.Term() })
		if journal != nil {
			t = max(t, journal.Term())
		}
		return max(t, 1)
	}
	reg, err := master.NewRegistry(master.RegistryConfig{
		Name: hostname(), MetaID: store.MetaID(), AuthCode: []byte(cfg.AuthCode), Term: term, Logger: log,
		Versions: func() (v map[uint64]uint32, err error) {
			store.Read(func(s *meta.State) { v, err = master.ChunkVersions(s) })
			return v, err
		},
	})
	var srv *master.Server
	if err == nil {
		srv, err = master.New(master.Config{
			Store: store, Exports: ex, Name: hostname(), AuthCode: []byte(cfg.AuthCode),
			AuthClients: cfg.AuthClientsFlag, SessionGrace: cfg.SessionSustain, Term: term, Logger: log,
			Chunks: reg,
		})
	}
	var rep *master.Replicator
	if err == nil {
		rep, err = master.NewReplicator(srv, master.ReplicatorConfig{
			MaxCPS: cfg.LoopMaxCPS, WriteLimit: cfg.WriteRepLimit, ReadLimit: cfg.ReadRepLimit,
			DeleteLimit: cfg.DelLimit, StartDelay: cfg.RepDelayInit, NoDelete: cfg.LoopNoDeletion,
		})
	}
	if err == nil {
		err = serve(ctx, srv, reg, rep, cfg, log)
	}
	if journal != nil && journal.Err() != nil {
		err = errors.Join(err, journal.Err())
	}
	if cerr := store.Close(); cerr != nil {
		log.Error("metadata not saved on stop; the next start recovers from the changelog", "err", cerr)
		return 1
	}
	if err != nil {
		log.Error("master stopped", "err", err)
		return 1
	}
	return 0
}

// startJournal serves metaloggers and waits until a majority has
// accepted the master's term and stores its log.
func startJournal(ctx context.Context, j *master.Journal, store *metastore.Store, cfg Config, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.mlListenAddr())
	if err != nil {
		return fmt.Errorf("listen for metaloggers: %w", err)
	}
	n, _, _ := cfg.metaloggers()
	log.Info("serving metaloggers", "addr", ln.Addr().String(), "metaloggers", n, "majority", j.Majority(), "commit_mode", cfg.commitMode())
	return j.Start(ctx, ln, store)
}

// serve listens for clients and chunkservers, tells systemd it is ready,
// and serves until ctx ends or either listener fails.
func serve(ctx context.Context, srv *master.Server, reg *master.Registry, rep *master.Replicator, cfg Config, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.listenAddr())
	if err != nil {
		return fmt.Errorf("listen for clients: %w", err)
	}
	csln, err := net.Listen("tcp", cfg.csListenAddr())
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen for chunkservers: %w", err)
	}
	log.Info("serving clients", "addr", ln.Addr().String())
	log.Info("serving chunkservers", "addr", csln.Addr().String())
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("could not tell systemd we are ready", "err", err)
	}
	// Either listener failing stops both: a master that cannot reach its
	// chunkservers must not go on acknowledging clients as if it could.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	csDone := make(chan error, 1)
	go func() {
		err := reg.Serve(ctx, csln)
		cancel()
		csDone <- err
	}()
	repDone := make(chan error, 1)
	go func() { repDone <- rep.Run(ctx) }()
	err = srv.Serve(ctx, ln)
	cancel()
	err = errors.Join(err, <-csDone, <-repDone)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
}

func loadConfig(c *cli.Context) (Config, error) {
	cfg := Defaults()
	if err := cliutil.LoadConfig(c, &cfg, &cfg.DataPath); err != nil {
		return cfg, err
	}
	if e := c.String("exports"); e != "" {
		cfg.ExportsFile = e
	}
	if l := c.String("listen"); l != "" {
		var err error
		if cfg.ClientHost, cfg.ClientPort, err = cliutil.HostPort("--listen", l); err != nil {
			return cfg, err
		}
	}
	if l := c.String("cs-listen"); l != "" {
		var err error
		if cfg.CSHost, cfg.CSPort, err = cliutil.HostPort("--cs-listen", l); err != nil {
			return cfg, err
		}
	}
	if l := c.String("ml-listen"); l != "" {
		var err error
		if cfg.MLHost, cfg.MLPort, err = cliutil.HostPort("--ml-listen", l); err != nil {
			return cfg, err
		}
	}
	if m := c.String("metaloggers"); m != "" {
		cfg.Metaloggers = m
	}
	if m := c.String("commit-mode"); m != "" {
		cfg.CommitMode = m
	}
	return cfg, cfg.Validate()
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "mfsmaster"
	}
	return h
}
