package mount

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/carpfs/carpfs/internal/master/client"
	"github.com/carpfs/carpfs/internal/replication"
)

// Extended attributes are the master's, except for these:
//
//   - carpfs.goal is virtual: reading it gives the inode's goal ("2",
//     "012"), writing it sets the goal (mfscli goal, mfssetgoal), it
//     cannot be removed and is not listed, so that cp -a and rsync -X do
//     not copy it elsewhere. Other carpfs.* names are reserved.
//   - security.capability is asked by the kernel before every write to a
//     file; its absence is remembered for the attribute timeout, so that
//     writes do not each cost a round trip to the master. A file this
//     mount has just created has none, without asking.
const (
	goalXattr    = "carpfs.goal"
	carpfsPrefix = "carpfs."
	capsXattr    = "security.capability"
)

// xattrOut answers a get or list: the size alone for an empty buffer,
// ERANGE with the size for a short one.
func xattrOut(v []byte, dest []byte) (uint32, fuse.Status) {
	switch {
	case len(dest) == 0:
		return uint32(len(v)), fuse.OK
	case len(dest) < len(v):
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (fs *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	ctx := ctxOf(cancel)
	ino := uint32(h.NodeId)
	switch {
	case attr == goalXattr:
		var code uint8
		err := fs.do(ctx, func(c *client.Client) (err error) {
			code, err = c.GetGoal(ctx, credOf(h), ino)
			return err
		})
		if err != nil {
			return 0, fs.status("getxattr", err)
		}
		v := strconv.Itoa(int(code))
		if g, err := replication.GoalFromCode(code); err == nil {
			v = g.String()
		}
		return xattrOut([]byte(v), dest)
	case strings.HasPrefix(attr, carpfsPrefix):
		return 0, fuse.ENOATTR
	case attr == capsXattr && fs.noCapsCached(ino):
		return 0, fuse.ENOATTR
	}
	var v []byte
	err := fs.do(ctx, func(c *client.Client) (err error) {
		v, err = c.GetXattr(ctx, credOf(h), ino, attr)
		return err
	})
	if attr == capsXattr && errors.Is(err, syscall.ENODATA) {
		fs.noteNoCaps(ino)
	}
	if err != nil {
		return 0, fs.status("getxattr", err)
	}
	return xattrOut(v, dest)
}

// noteNoCaps remembers for the attribute timeout that ino has no
// security.capability.
func (fs *FS) noteNoCaps(ino uint32) {
	if fs.attrTTL <= 0 {
		return
	}
	fs.mu.Lock()
	if len(fs.noCaps) > 1<<16 {
		clear(fs.noCaps)
	}
	fs.noCaps[ino] = time.Now().Add(fs.attrTTL)
	fs.mu.Unlock()
}

func (fs *FS) noCapsCached(ino uint32) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	t, ok := fs.noCaps[ino]
	return ok && time.Now().Before(t)
}

func (fs *FS) forgetCaps(ino uint32) {
	fs.mu.Lock()
	delete(fs.noCaps, ino)
	fs.mu.Unlock()
}

func (fs *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	ctx := ctxOf(cancel)
	var names []string
	err := fs.do(ctx, func(c *client.Client) (err error) {
		names, err = c.ListXattr(ctx, credOf(h), uint32(h.NodeId))
		return err
	})
	if err != nil {
		return 0, fs.status("listxattr", err)
	}
	var b []byte
	for _, n := range names {
		b = append(append(b, n...), 0)
	}
	return xattrOut(b, dest)
}

func (fs *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	ctx := ctxOf(cancel)
	ino := uint32(in.NodeId)
	fs.staleDir(ino)
	switch {
	case attr == goalXattr:
		return fs.setGoal(ctx, &in.InHeader, data)
	case strings.HasPrefix(attr, carpfsPrefix):
		return fuse.EPERM
	}
	if in.Flags > 3 {
		return fuse.EINVAL
	}
	fs.forgetCaps(ino)
	return fs.status("setxattr", fs.do(ctx, func(c *client.Client) error {
		return c.SetXattr(ctx, credOf(&in.InHeader), ino, attr, data, uint8(in.Flags))
	}))
}

// setGoal sets the goal from a carpfs.goal value, with or without a
// trailing newline.
func (fs *FS) setGoal(ctx context.Context, h *fuse.InHeader, data []byte) fuse.Status {
	g, err := replication.ParseGoal(strings.TrimSuffix(string(data), "\n"))
	if err != nil {
		return fuse.EINVAL
	}
	err = fs.do(ctx, func(c *client.Client) error {
		_, err := c.SetGoal(ctx, credOf(h), uint32(h.NodeId), g.Code())
		return err
	})
	return fs.status("setgoal", err)
}

func (fs *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	ctx := ctxOf(cancel)
	ino := uint32(h.NodeId)
	fs.staleDir(ino)
	switch {
	case attr == goalXattr:
		return fuse.EPERM
	case strings.HasPrefix(attr, carpfsPrefix):
		return fuse.ENOATTR
	}
	fs.forgetCaps(ino)
	return fs.status("removexattr", fs.do(ctx, func(c *client.Client) error {
		return c.RemoveXattr(ctx, credOf(h), ino, attr)
	}))
}
