package client

import (
	"context"
	"errors"

	"github.com/carpfs/carpfs/internal/wire"
)

// Node types for Create, as meta.Type numbers them.
const (
	TypeFile   uint8 = 1
	TypeDir    uint8 = 2
	TypeFifo   uint8 = 4
	TypeSocket uint8 = 5
	TypeChar   uint8 = 6
	TypeBlock  uint8 = 7
)

// Lookup finds name in directory parent.
func (c *Client) Lookup(ctx context.Context, cr Cred, parent uint32, name string) (wire.Attr, error) {
	return c.entry(ctx, &wire.LookupName{ReqHeader: c.hdr(cr), Parent: parent, Name: name})
}

// GetAttr returns an inode's attributes.
func (c *Client) GetAttr(ctx context.Context, cr Cred, ino uint32) (wire.Attr, error) {
	return c.entry(ctx, &wire.GetAttr{ReqHeader: c.hdr(cr), Inode: ino})
}

// SetAttrArgs are the fields of a SetAttr; Mask (wire.SetAttr*) says
// which apply.
type SetAttrArgs struct {
	Mask         uint8
	Mode         uint16
	UID, GID     uint32
	Atime, Mtime uint32
	Size         uint64
}

// SetAttr changes mode, owner, times or size and returns the result.
func (c *Client) SetAttr(ctx context.Context, cr Cred, ino uint32, a SetAttrArgs) (wire.Attr, error) {
	return c.entry(ctx, &wire.SetAttr{
		ReqHeader: c.hdr(cr), Inode: ino, Mask: a.Mask, Mode: a.Mode,
		NewUID: a.UID, NewGID: a.GID, Atime: a.Atime, Mtime: a.Mtime, Size: a.Size,
	})
}

// Create makes a node of type typ (TypeFile, TypeDir, ...); with open
// set it also opens the new file for the session (FUSE's create).
func (c *Client) Create(ctx context.Context, cr Cred, parent uint32, name string, typ uint8, mode uint16, rdev uint32, open bool) (wire.Attr, error) {
	return c.entry(ctx, &wire.Create{
		ReqHeader: c.hdr(cr), Parent: parent, Name: name,
		NodeType: typ, Mode: mode, Rdev: rdev, Open: open,
	})
}

// Mkdir makes a directory.
func (c *Client) Mkdir(ctx context.Context, cr Cred, parent uint32, name string, mode uint16) (wire.Attr, error) {
	return c.Create(ctx, cr, parent, name, TypeDir, mode, 0, false)
}

// Symlink makes a symbolic link to target.
func (c *Client) Symlink(ctx context.Context, cr Cred, parent uint32, name, target string) (wire.Attr, error) {
	return c.entry(ctx, &wire.Symlink{ReqHeader: c.hdr(cr), Parent: parent, Name: name, Target: target})
}

// Link adds name in parent as a hard link to ino.
func (c *Client) Link(ctx context.Context, cr Cred, ino, parent uint32, name string) (wire.Attr, error) {
	return c.entry(ctx, &wire.Link{ReqHeader: c.hdr(cr), Inode: ino, Parent: parent, Name: name})
}

// Unlink removes a non-directory's name.
func (c *Client) Unlink(ctx context.Context, cr Cred, parent uint32, name string) error {
	return c.ok(ctx, &wire.Unlink{ReqHeader: c.hdr(cr), Parent: parent, Name: name})
}

// Rmdir removes an empty directory.
func (c *Client) Rmdir(ctx context.Context, cr Cred, parent uint32, name string) error {
	return c.ok(ctx, &wire.Rmdir{ReqHeader: c.hdr(cr), Parent: parent, Name: name})
}

// Rename moves an entry as rename(2).
func (c *Client) Rename(ctx context.Context, cr Cred, srcParent uint32, srcName string, dstParent uint32, dstName string) error {
	return c.ok(ctx, &wire.Rename{ReqHeader: c.hdr(cr), SrcParent: srcParent, SrcName: srcName, DstParent: dstParent, DstName: dstName})
}

// ReadLink returns a symlink's target.
func (c *Client) ReadLink(ctx context.Context, cr Cred, ino uint32) (string, error) {
	var t wire.LinkTarget
	if err := c.mux.CallInto(ctx, &wire.ReadLink{ReqHeader: c.hdr(cr), Inode: ino}, &t); err != nil {
		return "", err
	}
	return t.Target, nil
}

// ReadDir returns up to max entries (0: the master's default) after the
// name after, in name order, and whether more follow.
func (c *Client) ReadDir(ctx context.Context, cr Cred, ino uint32, after string, max uint32) ([]wire.DirEntry, bool, error) {
	var p wire.DirPage
	if err := c.mux.CallInto(ctx, &wire.ReadDir{ReqHeader: c.hdr(cr), Inode: ino, After: after, Max: max}, &p); err != nil {
		return nil, false, err
	}
	return p.Entries, p.More, nil
}

// ErrNoNames is ReadDirNames's answer from a master older than protocol
// 2: use ReadDir.
var ErrNoNames = errors.New("client: the master cannot list names without attributes (protocol 1)")

// ReadDirNames returns, like ReadDir, up to max names after after, with
// each one's inode and type only (Attr.Nlink is 0: not known).
func (c *Client) ReadDirNames(ctx context.Context, cr Cred, ino uint32, after string, max uint32) ([]wire.DirEntry, bool, error) {
	if c.mux.Conn().Version < 2 {
		return nil, false, ErrNoNames
	}
	var p wire.DirNames
	if err := c.mux.CallInto(ctx, &wire.ReadDirNames{ReqHeader: c.hdr(cr), Inode: ino, After: after, Max: max}, &p); err != nil {
		return nil, false, err
	}
	ents := make([]wire.DirEntry, len(p.Entries))
	for i, e := range p.Entries {
		ents[i] = wire.DirEntry{Name: e.Name, Attr: wire.Attr{Inode: e.Inode, NodeType: e.NodeType}}
	}
	return ents, p.More, nil
}

// ReadDirAll lists a whole directory, page by page.
func (c *Client) ReadDirAll(ctx context.Context, cr Cred, ino uint32) ([]wire.DirEntry, error) {
	var all []wire.DirEntry
	after := ""
	for {
		ents, more, err := c.ReadDir(ctx, cr, ino, after, 0)
		if err != nil {
			return nil, err
		}
		all = append(all, ents...)
		if !more || len(ents) == 0 {
			return all, nil
		}
		after = ents[len(ents)-1].Name
	}
}

// GetXattr returns one extended attribute.
func (c *Client) GetXattr(ctx context.Context, cr Cred, ino uint32, name string) ([]byte, error) {
	var v wire.XattrValue
	if err := c.mux.CallInto(ctx, &wire.GetXattr{ReqHeader: c.hdr(cr), Inode: ino, Name: name}, &v); err != nil {
		return nil, err
	}
	return v.Value, nil
}

// ListXattr returns the names of an inode's extended attributes, sorted.
func (c *Client) ListXattr(ctx context.Context, cr Cred, ino uint32) ([]string, error) {
	var n wire.XattrNames
	if err := c.mux.CallInto(ctx, &wire.ListXattr{ReqHeader: c.hdr(cr), Inode: ino}, &n); err != nil {
		return nil, err
	}
	return n.Names, nil
}

// SetXattr sets an extended attribute; flags as setxattr(2).
func (c *Client) SetXattr(ctx context.Context, cr Cred, ino uint32, name string, value []byte, flags uint8) error {
	return c.ok(ctx, &wire.SetXattr{ReqHeader: c.hdr(cr), Inode: ino, Name: name, Value: value, Flags: flags})
}

// RemoveXattr removes an extended attribute.
func (c *Client) RemoveXattr(ctx context.Context, cr Cred, ino uint32, name string) error {
	return c.ok(ctx, &wire.RemoveXattr{ReqHeader: c.hdr(cr), Inode: ino, Name: name})
}

// StatFS returns the file system's totals.
func (c *Client) StatFS(ctx context.Context, cr Cred) (wire.FSStats, error) {
	var s wire.FSStats
	err := c.mux.CallInto(ctx, &wire.StatFS{ReqHeader: c.hdr(cr)}, &s)
	return s, err
}

// Open records that the session holds ino open (flags as open(2)) and
// returns its attributes.
func (c *Client) Open(ctx context.Context, cr Cred, ino uint32, flags uint32) (wire.Attr, error) {
	return c.entry(ctx, &wire.Open{ReqHeader: c.hdr(cr), Inode: ino, Flags: flags})
}

// Release drops one Open of ino.
func (c *Client) Release(ctx context.Context, cr Cred, ino uint32) error {
	return c.ok(ctx, &wire.Release{ReqHeader: c.hdr(cr), Inode: ino})
}

// SetGoal sets ino's goal and returns its attributes.
func (c *Client) SetGoal(ctx context.Context, cr Cred, ino uint32, goal uint8) (wire.Attr, error) {
	return c.entry(ctx, &wire.SetGoal{ReqHeader: c.hdr(cr), Inode: ino, Goal: goal})
}

// GetGoal returns ino's goal.
func (c *Client) GetGoal(ctx context.Context, cr Cred, ino uint32) (uint8, error) {
	a, err := c.entry(ctx, &wire.GetGoal{ReqHeader: c.hdr(cr), Inode: ino})
	return a.Goal, err
}

// ChunkRead returns where chunk index of ino is stored, with the file's
// length; ID 0 is a hole.
func (c *Client) ChunkRead(ctx context.Context, cr Cred, ino, index uint32) (wire.ChunkInfo, error) {
	var ci wire.ChunkInfo
	err := c.mux.CallInto(ctx, &wire.ChunkRead{ReqHeader: c.hdr(cr), Inode: ino, Index: index}, &ci)
	return ci, err
}

// ChunkWrite takes the write lease on chunk index of ino and returns the
// chain to write. EBUSY means another session holds it.
func (c *Client) ChunkWrite(ctx context.Context, cr Cred, ino, index uint32) (wire.ChunkInfo, error) {
	var ci wire.ChunkInfo
	err := c.mux.CallInto(ctx, &wire.ChunkWrite{ReqHeader: c.hdr(cr), Inode: ino, Index: index}, &ci)
	return ci, err
}

// ChunkWriteEnd ends the write lease on chunk id of ino, setting the
// file's length to at least length (0 leaves it); bad lists the chain's
// servers that failed a write.
func (c *Client) ChunkWriteEnd(ctx context.Context, cr Cred, ino uint32, id, length uint64, bad []string) error {
	return c.ok(ctx, &wire.ChunkWriteEnd{ReqHeader: c.hdr(cr), Inode: ino, ID: id, Length: length, Bad: bad})
}

// Lock takes or drops an advisory lock (see wire.Lock); EAGAIN means
// another owner holds a conflicting one.
func (c *Client) Lock(ctx context.Context, cr Cred, l wire.Lock) error {
	l.ReqHeader = c.hdr(cr)
	return c.ok(ctx, &l)
}

// GetLock returns the lock that would conflict with l (see
// wire.GetLock); LockType wire.LockUnlock when none would.
func (c *Client) GetLock(ctx context.Context, cr Cred, l wire.GetLock) (wire.LockInfo, error) {
	l.ReqHeader = c.hdr(cr)
	var li wire.LockInfo
	err := c.mux.CallInto(ctx, &l, &li)
	return li, err
}
