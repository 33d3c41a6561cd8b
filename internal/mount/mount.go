// Package mount is the FUSE file system of mfsmount: it answers the
// kernel's requests from the master (metadata, over a session.Session
// that survives lost connections) and the chunkservers (file data,
// through fileio and a chunkio.Pool).
//
// # Why the raw FUSE API
//
// It implements go-fuse's fuse.RawFileSystem with the kernel's node id
// equal to the master's inode number (1 is the export's root for both).
// The master keeps every inode and its numbers are stable, so the mount
// needs no tree of its own: go-fuse's fs.Inode API would mirror the
// kernel's dentries in memory, track lookups and renames, and add a
// layer between a request and the master's answer. Here a request is one
// master call, and what the mount keeps is only what the master cannot
// know: open handles, buffered writes, directory listings being read,
// and which lock owners hold POSIX locks. The kernel's FORGET needs no
// bookkeeping. An inode number the master frees rests a while before it
// is reused (meta.InodeReuseDelay), which covers the kernel's stale
// references in practice; generations are always 0.
//
// # Caching and consistency
//
// Attributes and entries are cached by the kernel for one second (also
// negative entries: a name that does not exist), and it checks
// permissions itself (default_permissions), because the master checks
// none. Open files keep the kernel's page cache when the master's size
// and mtime are unchanged since the previous open of the same inode and
// the mtime is older than two seconds (the master's times have one
// second resolution), else the cache is dropped (close-to-open
// consistency across mounts). While a file has data buffered here, its
// size as shown is never less than what was written (fileio.Engine.Size).
//
// A removed directory that is still open reads as empty and stats with
// the attributes it had, with no links, as on a local file system: the
// master forgets it at once.
package mount

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/carpfs/carpfs/internal/chunkio"
	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/mount/fileio"
	"github.com/carpfs/carpfs/internal/mount/session"
	"github.com/carpfs/carpfs/internal/wire"
)

// Defaults for Config.
const (
	DefaultCacheTimeout = time.Second
	maxWrite            = 1 << 20 // largest FUSE read and write request
	maxReadAhead        = 1 << 20 // the kernel's read-ahead, raised to this
)

// Config configures a mount.
type Config struct {
	Master session.Config // the master and the session's options
	// AttrTimeout, EntryTimeout and NegativeTimeout are how long the
	// kernel caches attributes, names and missing names; 0 means
	// DefaultCacheTimeout, negative disables the cache.
	AttrTimeout, EntryTimeout, NegativeTimeout time.Duration
	// IO is the data path's configuration; Meta, Data and FailedServer
	// are filled in by New.
	IO fileio.Config
	// DataTimeout bounds each chunkserver request; 0 is chunkio's
	// default.
	DataTimeout time.Duration
	Logger      *slog.Logger // nil discards
}

// New opens the session with the master and prepares the data path. It
// waits for an unreachable master until ctx ends.
func New(ctx context.Context, cfg Config) (*FS, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	fs := newFS(cfg)
	mcfg := cfg.Master
	mcfg.Logger = cfg.Logger
	mcfg.Reopened = fs.reopen
	mcfg.Client.Dirs = fs.noteDirs
	s, err := session.Open(ctx, mcfg)
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	fs.s = s
	fs.pool = chunkio.NewPool(chunkio.Config{
		Role: wire.RoleClient, Name: cfg.Master.Client.Name, MetaID: s.MetaID(),
		Term: s.Term, Timeout: cfg.DataTimeout, Logger: cfg.Logger,
	})
	io := cfg.IO
	io.Meta, io.Data, io.Logger = metaIO{s}, fs.pool, cfg.Logger
	io.FailedServer = func(err error) string {
		var ce *chunkio.ChainError
		if errors.As(err, &ce) {
			return ce.Server
		}
		return ""
	}
	if io.Timeout == 0 {
		io.Timeout = mcfg.Timeout
	}
	if fs.e, err = fileio.New(io); err != nil {
		s.Close(ctx)
		fs.pool.Close()
		return nil, fmt.Errorf("mount: %w", err)
	}
	return fs, nil
}

// Options are how the file system is mounted.
type Options struct {
	FsName     string      // the source shown by mount(8), "HOST:PORT:/SUBDIR"
	ReadOnly   bool        // mount read-only (also forced by a read-only export)
	AllowOther bool        // let other users in (always when mounted by root)
	Extra      []string    // more mount options: nosuid, nodev, noexec, ...
	Debug      bool        // log every FUSE request and answer
	DebugLog   *log.Logger // where go-fuse logs; nil means the mount's Logger
}

// Mount mounts the file system at dir and starts serving it. It returns
// once the mount is in place.
func (fs *FS) Mount(dir string, o Options) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	root := os.Geteuid() == 0
	opts := &fuse.MountOptions{
		FsName:        o.FsName,
		Name:          "carpfs",
		AllowOther:    o.AllowOther || root,
		MaxWrite:      maxWrite,
		MaxReadAhead:  maxReadAhead,
		MaxBackground: 64,
		EnableLocks:   true,
		DirectMount:   true,
		// The master checks no permissions: the kernel does, from the
		// attributes.
		Options: append([]string{"default_permissions"}, o.Extra...),
		// Data lives on chunkservers, never in a local file the kernel
		// could read directly.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		// READDIRPLUS only where it pays: the first page of a listing and
		// listings followed by lookups (ls -l). A plain listing (find,
		// readdir(3) alone) then costs the kernel no inode per name.
		ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
		// Reads answer from memory: splicing buys nothing, and go-fuse
		// logs every 1 MiB answer that does not fit a pipe.
		DisableSplice: true,
		Debug:         o.Debug,
		Logger:        o.DebugLog,
	}
	if opts.Logger == nil {
		opts.Logger = slog.NewLogLogger(fs.log.Handler(), slog.LevelWarn)
	}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if o.ReadOnly || fs.s.ReadOnly() {
		opts.Options = append(opts.Options, "ro")
		flags |= syscall.MS_RDONLY
	}
	for _, x := range o.Extra {
		switch x {
		case "suid":
			flags &^= syscall.MS_NOSUID
		case "dev":
			flags &^= syscall.MS_NODEV
		case "noexec":
			flags |= syscall.MS_NOEXEC
		}
	}
	opts.DirectMountFlags = flags
	srv, err := fuse.NewServer(fs, dir, opts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	fs.server, fs.dir = srv, dir
	if err := raiseReadAhead(dir, maxReadAhead); err != nil {
		fs.log.Warn("kernel read-ahead left at its default", "mountpoint", dir, "err", err)
	}
	fs.log.Info("mounted", "mountpoint", dir, "source", o.FsName, "session", fs.s.ID())
	return nil
}

// raiseReadAhead sets the read-ahead of the mount's backing device: the
// kernel offers FUSE only its default (128 KiB) at mount time, and takes
// more only through sysfs.
func raiseReadAhead(dir string, bytes int) error {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(fmt.Sprint(bytes>>10)), 0)
}

// Wait returns once the file system is unmounted (by Unmount, or by
// fusermount -u or umount from outside).
func (fs *FS) Wait() {
	if fs.server != nil {
		fs.server.Wait()
	}
}

// Unmount detaches the file system, as fusermount -u does. It fails
// with EBUSY while files on it are open.
func (fs *FS) Unmount() error {
	if fs.server == nil {
		return nil
	}
	if err := fs.server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", fs.dir, err)
	}
	return nil
}

// Close writes what is still buffered, ends the session with the master
// (which then releases the mount's open files and locks) and closes the
// chunkserver connections. Unmount first.
func (fs *FS) Close(ctx context.Context) error {
	err := fs.e.FlushAll(ctx)
	fs.e.Close()
	if cerr := fs.s.Close(ctx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	fs.pool.Close()
	if err != nil {
		return fmt.Errorf("mount: close: %w", err)
	}
	return nil
}

// Session is the master session, for tests and diagnostics.
func (fs *FS) Session() *session.Session { return fs.s }

// String names the file system for go-fuse.
func (fs *FS) String() string { return "carpfs" }

// metaIO is what fileio asks of the master, through the session. Chunk
// calls carry root's credentials: the master checks none for them.
type metaIO struct{ s *session.Session }

func (m metaIO) ChunkRead(ctx context.Context, ino, index uint32) (info wire.ChunkInfo, err error) {
	err = m.s.Do(ctx, func(c *client.Client) error {
		info, err = c.ChunkRead(ctx, client.Cred{}, ino, index)
		return err
	})
	return info, err
}

func (m metaIO) ChunkWrite(ctx context.Context, ino, index uint32) (info wire.ChunkInfo, err error) {
	err = m.s.Do(ctx, func(c *client.Client) error {
		info, err = c.ChunkWrite(ctx, client.Cred{}, ino, index)
		return err
	})
	return info, err
}

func (m metaIO) ChunkWriteEnd(ctx context.Context, ino uint32, id, length uint64, bad []string) error {
	return m.s.Do(ctx, func(c *client.Client) error {
		return c.ChunkWriteEnd(ctx, client.Cred{}, ino, id, length, bad)
	})
}

var (
	_ fuse.RawFileSystem = (*FS)(nil)
	_ fileio.Meta        = metaIO{}
	_ fileio.Data        = (*chunkio.Pool)(nil)
)

// FsNameOf builds the source mount(8) shows, "HOST:PORT:/SUBDIR".
func FsNameOf(addr, subdir string) string {
	if subdir == "" {
		subdir = "/"
	}
	if !strings.HasPrefix(subdir, "/") {
		subdir = "/" + subdir
	}
	return addr + ":" + subdir
}
