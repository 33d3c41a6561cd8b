// Package chunkserver is mfschunkserver: it opens the chunk store on the
// disks of mfshdd.cfg, registers them with the master on port 9420,
// heartbeats, reports damaged chunks found by a background scrub or by
// reads, and executes the master's commands (create, delete, set
// version, truncate, replicate). A lost master is reconnected with
// backoff, its host name resolved again each time, and the chunks
// registered again.
//
// The data port (9422, DataServer) serves mounts and other chunkservers:
// CRC-checked reads, writes that are forwarded down the chain of copies
// and answered once every copy has them, and fsyncs. Other chunkservers
// prove AUTH_CODE there; mounts need not. Replication (CSReplicate)
// reads the chunk from another server's data port and builds the copy
// under a version the master never uses, so a partial copy is never
// taken for a valid one (see replicate.go).
//
// The highest master term seen and the file system id are kept in
// DATA_PATH/chunkserver.state (see StateFile), so a restarted
// chunkserver still refuses a master that was replaced.
package chunkserver

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
	"github.com/carpfs/carpfs/internal/chunkstore"
)

// Config is mfschunkserver.cfg. Keys follow MooseFS where MooseFS has
// one.
type Config struct {
	MasterHost     string        `cfg:"MASTER_HOST"`
	MasterPort     uint16        `cfg:"MASTER_PORT"`
	MasterTimeout  time.Duration `cfg:"MASTER_TIMEOUT"`
	ReconnectDelay time.Duration `cfg:"MASTER_RECONNECTION_DELAY"`
	DataHost       string        `cfg:"CSSERV_LISTEN_HOST"`
	DataPort       uint16        `cfg:"CSSERV_LISTEN_PORT"`
	HDDConfig      string        `cfg:"HDD_CONF_FILENAME"`
	DataPath       string        `cfg:"DATA_PATH"`
	AuthCode       string        `cfg:"AUTH_CODE"`
	DataCenter     string        `cfg:"DATA_CENTER"`
	Rack           string        `cfg:"RACK"`
	LeaveFree      string        `cfg:"HDD_LEAVE_SPACE_DEFAULT"`
	// TestSpeed is the scrub's read rate in MB/s (HDD_TEST_SPEED, as in
	// MooseFS 4); 0 disables the scrub.
	TestSpeed string `cfg:"HDD_TEST_SPEED"`

	// Disks, when set (--hdd), replaces HDD_CONF_FILENAME.
	Disks []string
}

// Defaults are what a chunkserver runs with when no file says otherwise.
func Defaults() Config {
	return Config{
		MasterHost:     "mfsmaster",
		MasterPort:     9420,
		MasterTimeout:  10 * time.Second,
		ReconnectDelay: 5 * time.Second,
		DataHost:       "*",
		DataPort:       9422,
		HDDConfig:      "/etc/mfs/mfshdd.cfg",
		DataPath:       "/var/lib/mfs",
		LeaveFree:      "256MiB",
		TestSpeed:      "1",
	}
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.MasterHost == "":
		return errors.New("MASTER_HOST is empty")
	case c.DataPath == "":
		return errors.New("DATA_PATH is empty")
	case c.MasterTimeout <= 0:
		return fmt.Errorf("MASTER_TIMEOUT %s is not positive", c.MasterTimeout)
	case c.ReconnectDelay <= 0:
		return fmt.Errorf("MASTER_RECONNECTION_DELAY %s is not positive", c.ReconnectDelay)
	}
	if _, err := c.leaveFree(); err != nil {
		return err
	}
	if _, err := c.scrubRate(); err != nil {
		return err
	}
	return nil
}

func (c *Config) leaveFree() (int64, error) {
	n, err := chunkstore.ParseSize(c.LeaveFree)
	if err != nil {
		return 0, fmt.Errorf("HDD_LEAVE_SPACE_DEFAULT %q: %w", c.LeaveFree, err)
	}
	if n == 0 {
		n = -1 // chunkstore: negative keeps nothing free, 0 means its default
	}
	return n, nil
}

func (c *Config) scrubRate() (int64, error) {
	mb, err := strconv.ParseFloat(c.TestSpeed, 64)
	if err != nil || mb < 0 || mb > 1e6 {
		return 0, fmt.Errorf("HDD_TEST_SPEED %q: want MB/s, 0 to disable", c.TestSpeed)
	}
	return int64(mb * 1e6), nil
}

func (c *Config) masterAddr() string {
	return net.JoinHostPort(c.MasterHost, strconv.Itoa(int(c.MasterPort)))
}

func (c *Config) dataAddr() string {
	host := c.DataHost
	if host == "*" {
		host = ""
	}
	return net.JoinHostPort(host, strconv.Itoa(int(c.DataPort)))
}

// Main runs mfschunkserver with args (args[0] is the program name) until
// ctx ends, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &cli.App{
		Name:      "mfschunkserver",
		Usage:     "carpfs chunk server",
		UsageText: "mfschunkserver [-c CFGFILE] [--hdd DIR,DIR] [--master HOST:PORT] [--data-port HOST:PORT] [-d DATA_PATH]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "c", Usage: "configuration file (a missing file means defaults)", Value: "/etc/mfs/mfschunkserver.cfg"},
			&cli.StringFlag{Name: "d", Usage: "state directory (overrides DATA_PATH)"},
			&cli.StringFlag{Name: "hdd", Usage: "comma-separated chunk directories (overrides HDD_CONF_FILENAME)"},
			&cli.StringFlag{Name: "master", Usage: "master HOST:PORT (overrides MASTER_HOST/PORT)"},
			&cli.StringFlag{Name: "data-port", Usage: "data address HOST:PORT (overrides CSSERV_LISTEN_HOST/PORT)"},
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
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("chunkserver stopped", "err", err)
		return 1
	}
	return 0
}

// Run serves as a chunkserver configured by cfg until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	disks, err := diskSpecs(cfg)
	if err != nil {
		return err
	}
	leave, _ := cfg.leaveFree()
	rate, _ := cfg.scrubRate()
	if err := os.MkdirAll(cfg.DataPath, 0o755); err != nil {
		return fmt.Errorf("create DATA_PATH: %w", err)
	}
	store, err := chunkstore.Open(disks, chunkstore.Options{LeaveFree: leave, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	rep := store.ScanReport()
	log.Info("chunk store open", "chunks", rep.Chunks, "damaged", len(rep.Damaged), "stale", len(rep.Stale), "took", rep.Elapsed)
	if n, err := store.PurgeStale(); err != nil {
		log.Warn("could not delete every stale chunk file", "deleted", n, "err", err)
	}

	ln, err := net.Listen("tcp", cfg.dataAddr())
	if err != nil {
		return fmt.Errorf("listen on the data port: %w", err)
	}
	defer ln.Close()
	// Announce the port actually bound (it differs with port 0) and the
	// configured host, or none: the master then uses the address our
	// connection comes from.
	announce := net.JoinHostPort(strings.TrimSuffix(cfg.DataHost, "*"), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))

	ready := false
	link, err := NewLink(store, LinkConfig{
		Master: cfg.masterAddr(), DataAddr: announce, DataCenter: cfg.DataCenter, Rack: cfg.Rack,
		Name: hostname(), AuthCode: []byte(cfg.AuthCode), StateDir: cfg.DataPath,
		Timeout: cfg.MasterTimeout, ReconnectDelay: cfg.ReconnectDelay, ScrubRate: rate, Logger: log,
		OnRegistered: func() {
			if ready {
				return
			}
			ready = true
			if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
				log.Warn("could not tell systemd we are ready", "err", err)
			}
		},
	})
	if err != nil {
		return err
	}
	data := NewDataServer(store, DataConfig{
		Name: hostname(), AuthCode: []byte(cfg.AuthCode), MetaID: link.MetaID, Term: link.Term,
		Damaged: link.ReportDamaged, Logger: log,
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dataErr := make(chan error, 1)
	go func() {
		err := data.Serve(ctx, ln)
		if err != nil {
			cancel() // a chunkserver that serves no data must not stay registered
		}
		dataErr <- err
	}()
	log.Info("serving the data port", "addr", ln.Addr().String())
	err = link.Run(ctx)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	cancel()
	if derr := <-dataErr; err == nil {
		err = derr
	}
	return err
}

// diskSpecs reads the disks from --hdd or from HDD_CONF_FILENAME.
func diskSpecs(cfg Config) ([]chunkstore.DiskSpec, error) {
	if len(cfg.Disks) > 0 {
		return chunkstore.ParseHDDConfig(strings.NewReader(strings.Join(cfg.Disks, "\n")), "--hdd")
	}
	f, err := os.Open(cfg.HDDConfig)
	if err != nil {
		return nil, fmt.Errorf("HDD_CONF_FILENAME: %w", err)
	}
	defer f.Close()
	return chunkstore.ParseHDDConfig(f, cfg.HDDConfig)
}

func loadConfig(c *cli.Context) (Config, error) {
	cfg := Defaults()
	err := cliutil.LoadConfig(c, &cfg, &cfg.DataPath)
	if err != nil {
		return cfg, err
	}
	if h := c.String("hdd"); h != "" {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				cfg.Disks = append(cfg.Disks, p)
			}
		}
	}
	if m := c.String("master"); m != "" {
		if cfg.MasterHost, cfg.MasterPort, err = cliutil.HostPort("--master", m); err != nil {
			return cfg, err
		}
	}
	if d := c.String("data-port"); d != "" {
		if cfg.DataHost, cfg.DataPort, err = cliutil.HostPort("--data-port", d); err != nil {
			return cfg, err
		}
	}
	return cfg, cfg.Validate()
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "mfschunkserver"
	}
	return h
}
