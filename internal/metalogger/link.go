package metalogger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/backoff"
	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/fsutil"
	"github.com/carpfs/carpfs/internal/metadump"
	"github.com/carpfs/carpfs/internal/wire"
)

// Run keeps a link to the master until ctx ends, reconnecting with
// backoff (100 ms doubling up to ReconnectDelay, with jitter). It
// returns nil when ctx ends, or the error that made the metalogger stop
// (a state or changelog write that failed).
func (ml *Metalogger) Run(ctx context.Context) error {
	wait := backoff.Backoff{Min: 100 * time.Millisecond, Max: ml.cfg.ReconnectDelay}
	for {
		joined, err := ml.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if ferr := ml.Fatal(); ferr != nil {
			return ferr
		}
		if joined {
			wait.Reset()
		}
		ml.log.Warn("master link down; reconnecting", "master", ml.cfg.Master, "in", wait.Next(), "err", err)
		if !wait.Wait(ctx) {
			return nil
		}
	}
}

// Fatal is why the metalogger stopped, or nil.
func (ml *Metalogger) Fatal() error {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.fatal
}

// link is one connection to a master; the handler waits until the Mux
// is known.
type link struct {
	mux   *wire.Mux
	ready chan struct{}
	addr  string
}

// session runs one connection; joined tells whether the master got as
// far as streaming, which resets the backoff.
func (ml *Metalogger) session(ctx context.Context) (joined bool, err error) {
	d := net.Dialer{Timeout: ml.cfg.Timeout}
	nc, err := d.DialContext(ctx, "tcp", ml.cfg.Master)
	if err != nil {
		return false, err
	}
	ml.mu.Lock()
	metaid, term := ml.st.MetaID, ml.st.Term
	ml.mu.Unlock()
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{
		Role: wire.RoleMetalogger, Name: ml.st.ID, MetaID: metaid, Term: term,
		AuthCode: ml.cfg.AuthCode, PeerRole: wire.RoleMaster, Timeout: ml.cfg.Timeout,
	})
	if err != nil {
		nc.Close()
		return false, err
	}
	if metaid == 0 {
		ml.mu.Lock()
		ml.st.MetaID = conn.MetaID
		err := SaveState(ml.cfg.Dir, ml.st)
		if err != nil {
			ml.fail(err)
		}
		ml.mu.Unlock()
		if err != nil {
			nc.Close()
			return false, err
		}
		ml.log.Info("metalogger joined a file system", "metaid", fmt.Sprintf("%016x", conn.MetaID))
	}
	lk := &link{ready: make(chan struct{}), addr: nc.RemoteAddr().String()}
	lk.mux = wire.NewMux(conn, wire.MuxConfig{
		Handler: func(ctx context.Context, f wire.Frame) (wire.Message, error) {
			<-lk.ready
			return ml.handle(lk, f)
		},
		// In order: appends must be stored in the order they came.
		MaxInFlight: 1,
	})
	close(lk.ready)
	defer lk.mux.Close()
	ml.mu.Lock()
	ml.heard = time.Now()
	ml.mu.Unlock()
	dumpDone := make(chan struct{})
	go func() {
		defer close(dumpDone)
		ml.fetchDump(ctx, lk)
	}()
	defer func() { <-dumpDone }()
	tick := time.NewTicker(ml.cfg.Timeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return joined, nil
		case <-lk.mux.Done():
			ml.dropLink(lk)
			return joined || ml.wasJoined(lk), lk.mux.Err()
		case <-tick.C:
			ml.mu.Lock()
			silent := time.Since(ml.heard)
			joined = joined || ml.master == lk.mux
			ml.mu.Unlock()
			if silent > ml.cfg.Timeout {
				ml.dropLink(lk)
				return joined, fmt.Errorf("the master said nothing for %s", silent.Round(time.Millisecond))
			}
		}
	}
}

func (ml *Metalogger) wasJoined(lk *link) bool {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.heard.After(time.Now().Add(-ml.cfg.Timeout)) && ml.masterAddr == lk.addr
}

func (ml *Metalogger) dropLink(lk *link) {
	lk.mux.Close()
	ml.mu.Lock()
	if ml.master == lk.mux {
		ml.master = nil
	}
	ml.mu.Unlock()
}

// handle serves the master's messages, one at a time in order.
func (ml *Metalogger) handle(lk *link, f wire.Frame) (wire.Message, error) {
	m, err := wire.Decode(f)
	if err != nil {
		lk.mux.Abort(wire.RefuseProtocol, err.Error())
		return nil, err
	}
	ml.mu.Lock()
	defer ml.mu.Unlock()
	ml.heard = time.Now()
	if ml.fatal != nil {
		return nil, fmt.Errorf("metalogger stopped: %v: %w", ml.fatal, syscall.EIO)
	}
	switch m := m.(type) {
	case *wire.MLGrant:
		return ml.grant(lk, m)
	case *wire.MLTruncate:
		if ml.master != lk.mux {
			return nil, fmt.Errorf("truncate from a master whose term was not accepted: %w", syscall.ESTALE)
		}
		return ml.truncate(m.After)
	case *wire.MLAppend:
		if err := ml.append(lk, m); err != nil {
			ml.log.Error("stream from the master refused; reconnecting", "master", lk.addr, "err", err)
			lk.mux.Abort(wire.RefuseProtocol, fmt.Sprintf("metalogger %s refuses the stream: %v", ml.st.ID, err))
		}
		return nil, nil
	case *wire.MLFetch:
		return ml.fetch(m)
	}
	return nil, fmt.Errorf("%s is not for a metalogger: %w", f.Type, syscall.EPROTO)
}

// grant accepts the master's term if it is newer than the accepted one,
// or the same for the same holder, and says what this metalogger holds.
// Called with mu held.
func (ml *Metalogger) grant(lk *link, m *wire.MLGrant) (wire.Message, error) {
	if _, err := ml.accept(m.Term, m.Holder); err != nil {
		ml.log.Warn("master refused: it is not the current master", "master", lk.addr, "err", err)
		return ml.stateMsg(), nil // the master sees another term and steps down
	}
	if ml.master != nil && ml.master != lk.mux {
		ml.master.Abort(wire.RefuseTerm, fmt.Sprintf("metalogger %s accepted term %d for %q", ml.st.ID, ml.st.Term, ml.st.Holder))
	}
	ml.master, ml.masterAddr = lk.mux, lk.addr
	return ml.stateMsg(), nil
}

// accept raises the accepted term to term for holder, saving it before
// it returns. A lower term, or the same term for someone else, is
// refused. It reports whether anything changed. Called with mu held.
func (ml *Metalogger) accept(term uint64, holder string) (bool, error) {
	switch {
	case term == ml.st.Term && holder == ml.st.Holder:
		return false, nil
	case term <= ml.st.Term:
		return false, fmt.Errorf("term %d for %q refused: term %d was accepted for %q", term, holder, ml.st.Term, ml.st.Holder)
	}
	ns := ml.st
	ns.Term, ns.Holder = term, holder
	if err := SaveState(ml.cfg.Dir, ns); err != nil {
		ml.fail(err)
		return false, err
	}
	ml.st = ns
	ml.log.Info("term accepted", "term", term, "holder", holder)
	return true, nil
}

func (ml *Metalogger) stateMsg() *wire.MLState {
	return &wire.MLState{
		ID: ml.st.ID, Term: ml.st.Term, Holder: ml.st.Holder,
		First: ml.first, Last: ml.durable, LastTerm: ml.termOfDurable(),
		Committed: min(ml.st.Committed, ml.durable), Replica: min(ml.replicaV, ml.durable),
	}
}

// termOfDurable is the term of entry durable. Everything appended is
// durable when a grant or truncate is answered: they come in order
// after the appends, and the syncer is waited for.
func (ml *Metalogger) termOfDurable() uint64 {
	for ml.syncing || ml.durable < ml.last {
		ml.ackDue = true
		ml.changed.Broadcast()
		ml.changed.Wait()
	}
	return ml.lastT
}

// truncate drops the entries after after. Called with mu held.
func (ml *Metalogger) truncate(after uint64) (wire.Message, error) {
	if after < ml.st.Committed {
		return nil, fmt.Errorf("keeping only entries through %d would cut committed entries (committed through %d): %w", after, ml.st.Committed, syscall.EINVAL)
	}
	ml.termOfDurable() // no flush may run while the files change
	if after >= ml.last {
		return ml.stateMsg(), nil
	}
	if err := ml.cl.Close(); err != nil {
		ml.fail(err)
		return nil, err
	}
	n, err := changelog.TruncateAfter(ml.cfg.Dir, changelog.PrefixMetalogger, after)
	if err == nil {
		err = ml.openChangelog()
	}
	if err != nil {
		ml.fail(err)
		return nil, err
	}
	ml.durable = ml.last
	ml.filesCut = true
	ml.log.Warn("cut entries of an older term that the master does not have", "after", after, "entries", n)
	return ml.stateMsg(), nil
}

// append stores lines from the current master. Called with mu held.
func (ml *Metalogger) append(lk *link, m *wire.MLAppend) error {
	if ml.master != lk.mux {
		return errors.New("entries from a master whose term was not accepted here")
	}
	if m.Term != ml.st.Term {
		return fmt.Errorf("entries under term %d, the accepted term is %d", m.Term, ml.st.Term)
	}
	lines := m.Lines
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		line := lines[:i+1]
		lines = lines[i+1:]
		e, err := ml.cl.AppendLine(line)
		if err != nil {
			return err
		}
		if ml.first == 0 {
			ml.first = e.Version
		}
		ml.last, ml.lastT = e.Version, e.Term
	}
	ml.masterCommit = max(ml.masterCommit, m.Commit)
	if c := min(m.Commit, ml.last); c > ml.st.Committed {
		ml.st.Committed = c
	}
	ml.ackDue = true
	ml.changed.Broadcast()
	return nil
}

// fetch answers the master's read of stored entries. Called with mu
// held; reading the files does not touch the writer.
func (ml *Metalogger) fetch(m *wire.MLFetch) (wire.Message, error) {
	if m.From == 0 || m.From > ml.durable {
		return &wire.MLLines{}, nil
	}
	t, err := changelog.OpenTail(ml.cfg.Dir, changelog.PrefixMetalogger, m.From)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var out []byte
	for v := m.From; v <= ml.durable && (len(out) == 0 || len(out) < int(m.MaxBytes)); v++ {
		line, _, err := t.Next()
		if err != nil {
			return nil, fmt.Errorf("reading version %d: %w", v, err)
		}
		out = append(out, line...)
	}
	return &wire.MLLines{Lines: out}, nil
}

// fetchDump builds the replica from the master's newest dump when there
// is none: it downloads the file to a temporary name, checks it, and
// installs it once the changelog files continue it.
func (ml *Metalogger) fetchDump(ctx context.Context, lk *link) {
	for {
		ml.mu.Lock()
		need := !ml.haveRep && ml.fatal == nil && !ml.closed
		ml.mu.Unlock()
		if !need {
			return
		}
		err := ml.downloadDump(ctx, lk)
		if err == nil {
			return
		}
		if ctx.Err() != nil || lk.mux.Err() != nil {
			return
		}
		if !errors.Is(err, syscall.EAGAIN) {
			ml.log.Warn("dump download failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-lk.mux.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// downloadDump fetches and installs one dump.
func (ml *Metalogger) downloadDump(ctx context.Context, lk *link) error {
	tmp := filepath.Join(ml.cfg.Dir, DumpName+".download")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	var version, off uint64
	for {
		var d wire.MLDumpData
		if err := lk.mux.CallInto(ctx, &wire.MLDumpRead{Version: version, Offset: off, Size: 4 << 20}, &d); err != nil {
			f.Close()
			return err
		}
		if version != 0 && d.Version != version {
			f.Close()
			return fmt.Errorf("the master's dump changed from version %d to %d during the download", version, d.Version)
		}
		version = d.Version
		if _, err := f.Write(d.Data); err != nil {
			f.Close()
			return err
		}
		off += uint64(len(d.Data))
		if off >= d.Total {
			break
		}
		if len(d.Data) == 0 {
			f.Close()
			return fmt.Errorf("the master's dump ended at %d of %d bytes", off, d.Total)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	s, h, err := metadump.LoadFile(tmp, metadump.ReadOptions{})
	if err != nil {
		return fmt.Errorf("the master's dump: %w", err)
	}
	// The replica continues from the dump with our own entries: wait
	// until the files reach it.
	for {
		ml.mu.Lock()
		first, durable, metaid := ml.first, ml.durable, ml.st.MetaID
		ml.mu.Unlock()
		if h.MetaID != metaid {
			return fmt.Errorf("the master's dump belongs to file system %016x, this metalogger to %016x", h.MetaID, metaid)
		}
		if first > h.Version+1 {
			return fmt.Errorf("the master's dump is at version %d, this metalogger's files start at %d: entries between are missing", h.Version, first)
		}
		if durable >= h.Version {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lk.mux.Done():
			return lk.mux.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := os.Rename(tmp, filepath.Join(ml.cfg.Dir, DumpName)); err != nil {
		return err
	}
	if err := fsutil.SyncDir(ml.cfg.Dir); err != nil {
		return err
	}
	ml.mu.Lock()
	ml.replica, ml.replicaV, ml.haveRep, ml.dumpV, ml.repErr = s, s.Version(), true, s.Version(), nil
	ml.downloads++
	ml.changed.Broadcast()
	ml.mu.Unlock()
	ml.log.Info("replica started from the master's dump", "version", h.Version)
	return nil
}
