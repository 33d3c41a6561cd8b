// Package carpwatch is carpwatch, one per master host: it turns a CARP
// speaker's decision (the VIP arriving on this host or leaving it) into
// a safe master failover (DESIGN.md section 5).
//
// When the VIP arrives (seen through netlink, never through a CARP
// up-script), carpwatch ARP-probes it and refuses if another host still
// answers; fences a majority of the metaloggers over SSH by raising the
// term on each (`mfsmetalogger fence`), so no older master can get
// another entry stored; fetches over SFTP, from the best log of that
// majority (highest last term, then version), the dump and changelogs
// the new master starts from, after setting the master's old files
// aside (DATA_PATH/carpwatch-old); starts the master under the new term
// (a systemd unit over D-Bus, or a child process) and waits until it
// serves; and sends gratuitous ARP for the VIP. Each step is logged with
// its duration. Without a majority of metaloggers it refuses, says which
// are missing, starts nothing, and tries again while it holds the VIP;
// --force lets an operator start with fewer.
//
// When the VIP leaves, carpwatch stops the local master. When the local
// master dies while this host holds the VIP, carpwatch demotes the CARP
// speaker (DEMOTE_COMMAND, or stopping DEMOTE_UNIT) so that the other
// host takes the VIP. `carpwatch status` prints the state as JSON.
package carpwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"

	"github.com/carpfs/carpfs/internal/app/cliutil"
)

// Main runs carpwatch with args (args[0] is the program name) until ctx
// ends, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	code := -1
	cfgFlag := &cli.StringFlag{Name: "c", Usage: "configuration file", Value: "/etc/mfs/carpwatch.cfg"}
	app := &cli.App{
		Name:      "carpwatch",
		Usage:     "start a carpfs master where the CARP VIP is, safely",
		UsageText: "carpwatch [-c CFGFILE] [--force]\n   carpwatch status [-c CFGFILE]",
		Flags: []cli.Flag{cfgFlag,
			&cli.BoolFlag{Name: "force", Usage: "start a master even without a majority of metaloggers (an operator's decision: acknowledged operations may be lost)"},
		},
		Commands: []*cli.Command{{
			Name:  "status",
			Usage: "print carpwatch's state as JSON",
			Flags: []cli.Flag{cfgFlag},
			Action: func(c *cli.Context) error {
				code = status(c, stdout, stderr)
				return nil
			},
		}},
	}
	rc := cliutil.Run(ctx, app, args, stdout, stderr, func(c *cli.Context) int { return run(ctx, c, stderr) })
	if rc == 0 && code >= 0 {
		return code
	}
	return rc
}

func loadConfig(c *cli.Context) (Config, error) {
	cfg := Defaults()
	var unused string
	if err := cliutil.LoadConfig(c, &cfg, &unused); err != nil {
		return cfg, err
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
	vip, _ := cfg.vip()
	hosts, _ := cfg.metaloggers()
	holder := cfg.Holder
	if holder == "" {
		holder, _ = os.Hostname()
	}
	p, err := newParts(cfg, vip, log)
	if err != nil {
		log.Error("carpwatch could not start", "err", err)
		return 1
	}
	w := &watcher{cfg: cfg, vip: vip, hosts: hosts, holder: holder, force: c.Bool("force"), p: p, log: log}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("could not tell systemd we are ready", "err", err)
	}
	log.Info("carpwatch watching", "vip", vip, "interface", cfg.Interface, "metaloggers", len(hosts), "holder", holder, "force", w.force)
	if err := w.run(ctx); err != nil {
		log.Error("carpwatch stopped", "err", err)
		return 1
	}
	return 0
}

func status(c *cli.Context, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(c)
	if err != nil {
		fmt.Fprintf(stderr, "carpwatch status: %v\n", err)
		return 1
	}
	b, err := os.ReadFile(cfg.StatusFile)
	if err != nil {
		fmt.Fprintf(stderr, "carpwatch status: %v (is carpwatch running?)\n", err)
		return 1
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		fmt.Fprintf(stderr, "carpwatch status: %s: %v\n", cfg.StatusFile, err)
		return 1
	}
	if st.PID == 0 || syscall.Kill(st.PID, 0) != nil {
		// What a carpwatch that is gone left behind.
		st.State = "stopped (last: " + st.State + ")"
		b, _ = json.Marshal(st)
		b = append(b, '\n')
	}
	stdout.Write(b)
	return 0
}
