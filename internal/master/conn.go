package master

import (
	"context"
	"crypto/hmac"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"sync"
	"syscall"

	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/wire"
)

// Errnos the client link answers with besides meta's. Each error sent
// wraps one, so the mount hands the kernel the right code.
var (
	errAccess     = syscall.EACCES
	errBadSession = syscall.EBADF
	errInval      = syscall.EINVAL
	errNoSession  = syscall.ENOTCONN
	errReadOnly   = syscall.EROFS
)

// clientConn is one mount's connection.
type clientConn struct {
	srv     *Server
	peer    string // for logs
	addr    netip.Addr
	version uint16 // the session's protocol version

	mu    sync.Mutex
	nonce *[wire.NonceSize]byte // issued by SessionChallenge, used once
	sess  *session
}

// inlineRequest names the requests a client connection serves on its
// reading goroutine (see wire.MuxConfig.Inline): those answered from
// memory under the store's read lock in about constant time, and the
// opens and releases that DoLazy records without waiting for the disk.
// Listings are not among them: the first page of a huge directory sorts
// it, and the mount's other requests must not wait behind that.
func inlineRequest(t wire.Type) bool {
	switch t {
	case wire.TypePing, wire.TypeLookupName, wire.TypeGetAttr, wire.TypeReadLink,
		wire.TypeGetXattr, wire.TypeListXattr, wire.TypeStatFS, wire.TypeGetGoal,
		wire.TypeOpen, wire.TypeRelease:
		return true
	}
	return false
}

// handle serves one request of the mount. Its errors become Error
// replies carrying the errno they wrap.
func (cc *clientConn) handle(ctx context.Context, f wire.Frame) (wire.Message, error) {
	m, err := wire.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errInval)
	}
	switch m := m.(type) {
	case *wire.Ping:
		return &wire.Pong{Data: m.Data}, nil
	case *wire.SessionChallenge:
		n := new([wire.NonceSize]byte)
		*n = newNonce()
		cc.mu.Lock()
		cc.nonce = n
		cc.mu.Unlock()
		return &wire.SessionNonce{Nonce: *n}, nil
	case *wire.SessionOpen:
		return cc.open(ctx, m)
	case *wire.SessionEnd:
		return cc.end(ctx, m)
	}
	hm, ok := m.(interface{ Header() *wire.ReqHeader })
	if !ok {
		return nil, fmt.Errorf("%s is not a request a master serves: %w", f.Type, syscall.ENOSYS)
	}
	h := hm.Header()
	cc.mu.Lock()
	ss := cc.sess
	cc.mu.Unlock()
	if ss == nil {
		return nil, fmt.Errorf("%s: no session on this connection: send SessionOpen first: %w", f.Type, errNoSession)
	}
	if h.Session != ss.id {
		return nil, fmt.Errorf("%s: request for session %d on the connection of session %d: %w", f.Type, h.Session, ss.id, errBadSession)
	}
	r := &request{cc: cc, ss: ss, h: h}
	r.uid, r.gid = ss.exp.Map(h.UID, h.GID)
	if h.Seq != 0 && mutation(m) {
		return ss.replies.once(ctx, h.Seq, f.Type, func(ctx context.Context) (wire.Message, error) { return r.serve(ctx, m) })
	}
	return r.serve(ctx, m)
}

// open opens or resumes the connection's session.
func (cc *clientConn) open(ctx context.Context, m *wire.SessionOpen) (wire.Message, error) {
	s := cc.srv
	cc.mu.Lock()
	cur, nonce := cc.sess, cc.nonce
	cc.nonce = nil // a nonce proves one attempt only
	cc.mu.Unlock()
	if cur != nil {
		return nil, fmt.Errorf("session open: this connection already has session %d: %w", cur.id, errInval)
	}
	if !strings.HasPrefix(m.Path, "/") {
		return nil, fmt.Errorf("session open: path %q is not absolute: %w", m.Path, errInval)
	}
	dir := path.Clean(m.Path)
	tab := s.cfg.Exports
	exp, ok := tab.Match(cc.addr, dir)
	if !ok {
		s.log.Warn("mount refused: no export matches", "peer", cc.peer, "dir", dir, "exports", tab.Name)
		return nil, fmt.Errorf("session open: no line of %s admits %s to mount %s: %w", tab.Name, cc.addr, dir, errAccess)
	}
	if exp.Password != "" {
		switch {
		case len(m.Proof) == 0:
			return nil, fmt.Errorf("session open: %s line %d needs a password to mount %s: %w", tab.Name, exp.Line, dir, errAccess)
		case nonce == nil || !hmac.Equal(m.Proof, wire.SessionProof(exp.Password, *nonce, m.Path, m.SessionID)):
			s.log.Warn("mount refused: wrong password", "peer", cc.peer, "dir", dir, "line", exp.Line)
			return nil, fmt.Errorf("session open: wrong password for %s (%s line %d): %w", dir, tab.Name, exp.Line, errAccess)
		}
	}
	var root uint32 = meta.RootInode
	var rootAttr meta.Attr
	var e syscall.Errno
	s.store.Read(func(st *meta.State) {
		for _, name := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
			if name == "" {
				continue
			}
			if root, e = st.Lookup(root, name); e != 0 {
				return
			}
		}
		rootAttr, e = st.GetAttr(root)
		if e == 0 && rootAttr.Type != meta.TypeDir {
			e = syscall.ENOTDIR
		}
	})
	if e != 0 {
		return nil, fmt.Errorf("session open: %s: %w", dir, e)
	}
	ss := &session{id: m.SessionID, exp: exp, root: root, dir: dir, addr: cc.addr}
	resume := m.SessionID != 0
	if !resume {
		info := fmt.Sprintf("%s %s %s", cc.addr, dir, m.Info)
		res, err := s.store.Do(ctx, &meta.Session{Info: info})
		if err != nil {
			return nil, fmt.Errorf("session open: %w: %w", err, syscall.EIO)
		}
		if !res.Ok() {
			return nil, fmt.Errorf("session open: %w", res.Err)
		}
		ss.id = res.Val[0]
	}
	ss, err := s.attach(ss, resume)
	if err != nil {
		return nil, err
	}
	cc.mu.Lock()
	raced := cc.sess != nil
	if !raced {
		cc.sess = ss
	}
	cc.mu.Unlock()
	if raced {
		// Two opens raced on one connection; the other won.
		s.detachSession(ss)
		return nil, fmt.Errorf("session open: this connection already has a session: %w", errInval)
	}
	verb := "opened"
	if resume {
		verb = "resumed"
	}
	s.log.Info("session "+verb, "session", ss.id, "peer", cc.peer, "dir", dir, "export_line", exp.Line, "ro", exp.ReadOnly)
	r := request{ss: ss}
	return &wire.SessionOpened{SessionID: ss.id, ReadOnly: exp.ReadOnly, Root: r.attr(rootAttr)}, nil
}

// end closes the session at the client's request (umount).
func (cc *clientConn) end(ctx context.Context, m *wire.SessionEnd) (wire.Message, error) {
	cc.mu.Lock()
	ss := cc.sess
	if ss != nil && ss.id == m.SessionID {
		cc.sess = nil
	}
	cc.mu.Unlock()
	if ss == nil || ss.id != m.SessionID {
		return nil, fmt.Errorf("session end: session %d is not this connection's: %w", m.SessionID, errBadSession)
	}
	if err := cc.srv.end(ctx, ss); err != nil {
		return nil, fmt.Errorf("session end: %w", err)
	}
	cc.srv.log.Info("session closed by its client", "session", ss.id, "peer", cc.peer)
	return &wire.Ok{}, nil
}

// detach runs when the connection has ended.
func (cc *clientConn) detach() {
	cc.mu.Lock()
	ss := cc.sess
	cc.sess = nil
	cc.mu.Unlock()
	if ss != nil {
		cc.srv.detachSession(ss)
	}
}
