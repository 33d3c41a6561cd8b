package metalogger

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/wire"
)

// AdminSocket is the unix socket, in DATA_PATH, on which a running
// metalogger answers `mfsmetalogger status` and `mfsmetalogger fence`.
// Only processes that may open the data directory reach it.
const AdminSocket = "metalogger.sock"

// Status is what `mfsmetalogger status` and `fence` print, one line of
// JSON.
type Status struct {
	ID        string `json:"id"`
	MetaID    string `json:"metaid"`
	Term      uint64 `json:"term"`      // the highest term accepted
	Holder    string `json:"holder"`    // whom it was accepted for
	Version   uint64 `json:"version"`   // last entry stored
	LastTerm  uint64 `json:"last_term"` // its term
	First     uint64 `json:"first"`     // oldest entry in the files
	Committed uint64 `json:"committed"` // commit point known
	Replica   uint64 `json:"replica"`   // version of the replica, 0 without one
	Dump      uint64 `json:"dump"`      // version of the newest dump
	// Downloads counts the master's dumps this process fetched to start
	// a replica: one for a new metalogger, none for one that catches up.
	Downloads int    `json:"dumps_downloaded"`
	Running   bool   `json:"running"` // a daemon answered
	Master    string `json:"master,omitempty"`
	// Lag is how many committed entries (as the master last said) this
	// metalogger does not have yet.
	Lag   uint64 `json:"lag"`
	Error string `json:"error,omitempty"`
}

// Status reports the metalogger's state.
func (ml *Metalogger) Status() Status {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	s := Status{
		ID: ml.st.ID, MetaID: fmt.Sprintf("%016x", ml.st.MetaID), Term: ml.st.Term, Holder: ml.st.Holder,
		Version: ml.durable, LastTerm: ml.lastT, First: ml.first, Committed: min(ml.st.Committed, ml.durable),
		Replica: ml.replicaV, Dump: ml.dumpV, Downloads: ml.downloads, Running: true,
	}
	if ml.durable < ml.last {
		s.LastTerm = 0 // not yet durable: the term of entry durable is not at hand
		if t, ok := ml.termOfStored(ml.durable); ok {
			s.LastTerm = t
		}
	}
	if ml.master != nil {
		s.Master = ml.masterAddr
	}
	if ml.masterCommit > ml.durable {
		s.Lag = ml.masterCommit - ml.durable
	}
	if ml.fatal != nil {
		s.Error = ml.fatal.Error()
	}
	return s
}

// termOfStored reads the term of stored entry v from the files.
func (ml *Metalogger) termOfStored(v uint64) (uint64, bool) {
	if v == 0 {
		return 0, true
	}
	t, err := changelog.OpenTail(ml.cfg.Dir, changelog.PrefixMetalogger, v)
	if err != nil {
		return 0, false
	}
	defer t.Close()
	_, e, err := t.Next()
	return e.Term, err == nil && e.Version == v
}

// Fence raises the accepted term to term for holder, as a master's grant
// would, and ends the link to a master with an older term, so that it
// cannot get another entry accepted here. It returns the state after,
// and an error if the term was refused (lower, or the same for another
// holder).
func (ml *Metalogger) Fence(term uint64, holder string) (Status, error) {
	ml.mu.Lock()
	changed, err := ml.accept(term, holder)
	if changed && ml.master != nil {
		ml.master.Abort(wire.RefuseTerm, fmt.Sprintf("metalogger %s was fenced with term %d for %q", ml.st.ID, term, holder))
		ml.master = nil
		ml.log.Warn("fenced: the link to the master of the older term is closed", "term", term, "holder", holder)
	}
	ml.mu.Unlock()
	return ml.Status(), err
}

// ListenAdmin opens the admin socket; ServeAdmin answers on it.
func (ml *Metalogger) ListenAdmin() (net.Listener, error) {
	path := filepath.Join(ml.cfg.Dir, AdminSocket)
	_ = os.Remove(path) // a stale socket of a dead daemon: we hold the lock
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// ServeAdmin answers status and fence requests on ln until ctx ends.
func (ml *Metalogger) ServeAdmin(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("admin socket: %w", err)
		}
		go ml.serveAdmin(c)
	}
}

// adminRequest is one line a client sends.
type adminRequest struct {
	Op     string `json:"op"` // "status" or "fence"
	Term   uint64 `json:"term,omitempty"`
	Holder string `json:"holder,omitempty"`
}

func (ml *Metalogger) serveAdmin(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(c, 4096).ReadBytes('\n')
	if err != nil {
		return
	}
	var st Status
	if req, err := decodeAdminRequest(line); err != nil {
		st.Error = err.Error()
	} else {
		switch req.Op {
		case "status":
			st = ml.Status()
		case "fence":
			if st, err = ml.Fence(req.Term, req.Holder); err != nil {
				st.Error = err.Error()
			}
		default:
			st.Error = fmt.Sprintf("unknown operation %q: want status or fence", req.Op)
		}
	}
	b, _ := json.Marshal(st)
	_, _ = c.Write(append(b, '\n'))
}

// decodeAdminRequest reads one request line.
func decodeAdminRequest(line []byte) (adminRequest, error) {
	var req adminRequest
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return adminRequest{}, fmt.Errorf("bad request: %v", err)
	}
	switch {
	case req.Op == "fence" && req.Term == 0:
		return adminRequest{}, errors.New("bad request: fence needs a term of at least 1")
	case req.Op != "fence" && (req.Term != 0 || req.Holder != ""):
		return adminRequest{}, fmt.Errorf("bad request: %q takes no term or holder", req.Op)
	}
	return req, nil
}

// ErrNotRunning says no daemon answered on the admin socket.
var ErrNotRunning = errors.New("no mfsmetalogger runs on this data directory")

// Ask sends one request to the daemon running on dir.
func Ask(dir string, op string, term uint64, holder string) (Status, error) {
	c, err := net.DialTimeout("unix", filepath.Join(dir, AdminSocket), 5*time.Second)
	if err != nil {
		return Status{}, fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	b, _ := json.Marshal(adminRequest{Op: op, Term: term, Holder: holder})
	if _, err := c.Write(append(b, '\n')); err != nil {
		return Status{}, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return Status{}, fmt.Errorf("admin socket: %w", err)
	}
	var st Status
	if err := json.Unmarshal(line, &st); err != nil {
		return Status{}, fmt.Errorf("admin socket answer: %w", err)
	}
	if st.Error != "" {
		return st, errors.New(st.Error)
	}
	return st, nil
}

// FenceOffline raises the term in dir's state file when no daemon runs
// there, holding the directory's lock so that a daemon starting meanwhile
// waits for it.
func FenceOffline(dir string, term uint64, holder string) (Status, error) {
	return offline(dir, func(ml *Metalogger) error {
		_, err := ml.accept(term, holder)
		return err
	})
}

// StatusOffline reads dir's state when no daemon runs there.
func StatusOffline(dir string) (Status, error) {
	return offline(dir, func(*Metalogger) error { return nil })
}

func offline(dir string, f func(*Metalogger) error) (Status, error) {
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err != nil {
		return Status{}, fmt.Errorf("%s holds no metalogger: %w", dir, err)
	}
	lock, err := lockDir(dir, false)
	if err != nil {
		return Status{}, err
	}
	defer lock.Close()
	ml := &Metalogger{cfg: Config{Dir: dir}, log: slog.New(slog.DiscardHandler)}
	ml.changed = sync.NewCond(&ml.mu)
	st, _, err := LoadState(dir, "")
	if err != nil {
		return Status{}, err
	}
	ml.st = st
	if ml.first, err = firstVersion(dir); err != nil {
		return Status{}, err
	}
	if ml.last, ml.lastT, err = lastEntry(dir); err != nil {
		return Status{}, err
	}
	if h, err := metadump.ReadHeader(filepath.Join(dir, DumpName)); err == nil {
		// The replica a start would load: the dump, then the committed
		// entries after it.
		ml.dumpV = h.Version
		ml.replicaV = max(h.Version, min(st.Committed, ml.last))
	}
	ml.durable = ml.last
	ferr := f(ml)
	s := ml.Status()
	s.Running = false
	return s, ferr
}

// lastEntry reads the newest entry's version and term from the files,
// without changing them.
func lastEntry(dir string) (version, term uint64, err error) {
	files, err := changelog.List(dir, changelog.PrefixMetalogger)
	if err != nil {
		return 0, 0, err
	}
	for _, f := range slices.Backward(files) { // newest first
		fr, err := changelog.OpenFile(f.Path)
		if err != nil {
			return 0, 0, err
		}
		for {
			e, err := fr.Next()
			if err != nil {
				break // the end, or a torn tail the daemon will cut
			}
			version, term = e.Version, e.Term
		}
		fr.Close()
		if version != 0 {
			return version, term, nil
		}
	}
	return 0, 0, nil
}
