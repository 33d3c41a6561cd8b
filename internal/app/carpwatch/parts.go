package carpwatch

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/carpfs/carpfs/internal/carp"
	"github.com/carpfs/carpfs/internal/fetch"
	"github.com/carpfs/carpfs/internal/metalogger"
)

// newParts wires the real pieces: netlink and ARP (internal/carp), SSH
// and SFTP (internal/fetch), the master as a unit or a child, and the
// demotion.
func newParts(cfg Config, vip netip.Addr, log *slog.Logger) (parts, error) {
	var master masterCtl
	if cfg.MasterUnit != "" {
		master = newUnitMaster(cfg.MasterUnit, cfg.DataPath, log)
	} else {
		master = newChildMaster(cfg.MasterCommand, log)
	}
	return parts{
		watch: func(ctx context.Context) <-chan vipEvent {
			out := make(chan vipEvent)
			go func() {
				defer close(out)
				events, err := carp.Watch(ctx, carp.WatchConfig{Interface: cfg.Interface, VIP: vip, Logger: log})
				if err != nil {
					log.Error("cannot watch the VIP", "err", err)
					return
				}
				for ev := range events {
					select {
					case out <- vipEvent{Present: ev.Present, Why: ev.Reason.String()}:
					case <-ctx.Done():
						return
					}
				}
			}()
			return out
		},
		probe: func(ctx context.Context) (net.HardwareAddr, error) {
			return carp.Probe(ctx, cfg.Interface, vip, cfg.ARPProbes, 200*time.Millisecond)
		},
		announce: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := carp.Announce(ctx, cfg.Interface, vip, 3, 100*time.Millisecond); err != nil {
				log.Warn("gratuitous ARP failed", "vip", vip, "err", err)
			}
		},
		dial: func(ctx context.Context, h mlHost) (remote, error) {
			c, err := fetch.Dial(ctx, fetch.Host{
				Name: h.Name, Addr: h.Addr, User: cfg.SSHUser, KeyFile: cfg.SSHKey, KnownHosts: cfg.KnownHosts,
				DataPath: cfg.MLDataPath, Command: cfg.MLCommand,
			}, cfg.SSHTimeout)
			if err != nil {
				return nil, err
			}
			return sshRemote{c}, nil
		},
		master: master,
		demote: demoter(cfg, log),
		serving: func(ctx context.Context, done <-chan struct{}) error {
			return waitServing(ctx, cfg.MasterAddr, done, cfg.MasterTimeout)
		},
	}, nil
}

// sshRemote is a metalogger host over SSH.
type sshRemote struct{ c *fetch.Conn }

func (r sshRemote) Fence(ctx context.Context, term uint64, holder string) (metalogger.Status, error) {
	return r.c.Fence(ctx, term, holder)
}

func (r sshRemote) Status(ctx context.Context) (metalogger.Status, error) { return r.c.Status(ctx) }

func (r sshRemote) FetchLog(ctx context.Context, to uint64, dir string) ([]string, error) {
	got, err := r.c.Fetch(ctx, fetch.Want{From: 1, To: to, NeedDump: true}, dir)
	if err != nil {
		return nil, err
	}
	return got.Paths(), nil
}

func (r sshRemote) Close() error { return r.c.Close() }
