package master

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metastore"
	"github.com/carpfs/carpfs/internal/restore"
	"github.com/carpfs/carpfs/internal/wire"
)

// The journal is the master's side of the metalogger link (port 9419,
// docs/PROTOCOL.md "Metalogger and master"), the quorum that makes an
// acknowledged operation survive the master.
//
// Start gets the master's term accepted by a majority of the configured
// metaloggers, reads from the best of them (highest last term, then
// version) any entries the local log lacks, and writes the term's TERM
// entry; the master serves clients only once that entry is committed.
// From then on every entry the store applies (Append) is streamed to
// every connected metalogger, from memory or, for one that lags behind
// what memory holds, from the changelog files; an entry is committed
// once a majority has acknowledged it (and the TERM entry). WaitCommit
// is what the store's Do waits on.
//
// A metalogger that has accepted a newer term refuses this master; the
// journal then steps down: nothing more is acknowledged and Fenced is
// closed, so the master stops. Before the first commit, a journal with
// no fixed term instead starts a term above the one it met: no client
// has been answered yet, so nothing acknowledged can be contradicted.

// Journal defaults.
const (
	DefaultCommitTimeout = 30 * time.Second
	DefaultMLHeartbeat   = time.Second
	DefaultJournalMemory = 64 << 20
	mlBatchBytes         = 1 << 20
	mlFetchBytes         = 4 << 20
	mlDumpPart           = 4 << 20
)

// JournalConfig configures a Journal.
type JournalConfig struct {
	// Metaloggers is how many metaloggers the cluster has (METALOGGERS):
	// each entry needs ⌊n/2⌋+1 of them. At least 1.
	Metaloggers int
	// Hosts, if set, are the only hosts (names or addresses, resolved
	// at each connection) metaloggers may connect from.
	Hosts    []string
	Name     string // the master's name in handshakes
	MetaID   uint64 // set by Start from the store
	AuthCode []byte
	// Term is the term to serve under, when something (carpwatch) has
	// fenced the metaloggers for it already; 0 starts a term above every
	// term the metaloggers and the metadata have seen.
	Term uint64
	// Holder names this master's claim on its term; metaloggers accept a
	// term for one holder only. Required.
	Holder string
	// Dir is the master's data directory: its changelog files feed
	// metaloggers that lag behind memory, and its newest dump seeds new
	// ones.
	Dir string
	// CommitTimeout bounds how long an operation waits for a majority; 0
	// means DefaultCommitTimeout.
	CommitTimeout time.Duration
	// Heartbeat is the longest silence towards a metalogger; one that
	// says nothing for 10 heartbeats is dropped. 0 means
	// DefaultMLHeartbeat.
	Heartbeat time.Duration
	// MemoryBytes bounds the recent entries kept in memory for the
	// stream; 0 means DefaultJournalMemory.
	MemoryBytes int
	Logger      *slog.Logger
}

// Validate reports a config that cannot work.
func (c *JournalConfig) Validate() error {
	switch {
	case c.Metaloggers < 1:
		return fmt.Errorf("journal: %d metaloggers: want at least 1", c.Metaloggers)
	case c.Holder == "":
		return errors.New("journal: no holder name")
	case c.Dir == "":
		return errors.New("journal: no data directory")
	case c.CommitTimeout < 0 || c.Heartbeat < 0 || c.MemoryBytes < 0:
		return errors.New("journal: negative timeout, heartbeat or memory")
	}
	return nil
}

// JournalStore is what the journal needs of the metadata store.
type JournalStore interface {
	MetaID() uint64
	Position() (version, term uint64)
	Replay(entries []meta.Entry) error
	StartTerm(ctx context.Context, term uint64) error
}

var _ JournalStore = (*metastore.Store)(nil)
var _ metastore.Replicator = (*Journal)(nil)

// Journal streams the changelog to metaloggers and counts their
// acknowledgements.
type Journal struct {
	cfg JournalConfig
	log *slog.Logger

	mu        sync.Mutex
	changed   *sync.Cond // commit, acks, grants, peers or the term changed
	term      uint64
	serving   bool   // the TERM entry is committed
	termStart uint64 // version of this term's TERM entry; 0 until appended
	commit    uint64
	last      uint64 // last version appended
	enc       changelog.Encoder
	ring      [][]byte // lines of versions ringFirst..last
	ringFirst uint64
	ringBytes int
	peers     map[string]*mlPeer      // connected and granted, by metalogger ID
	granted   map[string]wire.MLState // this term's grants, by ID
	acked     map[string]uint64       // this term's acknowledgements, by ID
	fenced    error                   // set once: stepped down
	fencedCh  chan struct{}           // closed with fenced
	conns     map[*wire.Mux]struct{}  // every live connection
	started   bool
}

// mlPeer is one connected metalogger.
type mlPeer struct {
	id    string
	addr  string
	mux   *wire.Mux
	wake  chan struct{} // 1-buffered: entries or commit to send
	heard time.Time     // last frame from it (under Journal.mu)
}

// NewJournal makes a journal; give it to metastore.Open as the
// Replicator, then call Start.
func NewJournal(cfg JournalConfig) (*Journal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultMLHeartbeat
	}
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = DefaultJournalMemory
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	j := &Journal{
		cfg: cfg, log: cfg.Logger, term: cfg.Term,
		peers: map[string]*mlPeer{}, granted: map[string]wire.MLState{}, acked: map[string]uint64{},
		fencedCh: make(chan struct{}), conns: map[*wire.Mux]struct{}{},
	}
	j.changed = sync.NewCond(&j.mu)
	return j, nil
}

// Majority is how many metaloggers each entry needs.
func (j *Journal) Majority() int { return j.cfg.Metaloggers/2 + 1 }

// Term is the term the journal serves or is getting accepted.
func (j *Journal) Term() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.term
}

// Fenced is closed when the journal stepped down; Err says why.
func (j *Journal) Fenced() <-chan struct{} { return j.fencedCh }

// Err is why the journal stepped down, or nil.
func (j *Journal) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.fenced
}

// Append takes an entry the store applied, in version order. It runs
// under the store's lock: it only copies the line and wakes the feeders.
func (j *Journal) Append(e *meta.Entry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	line, err := j.enc.AppendEntry(nil, e)
	if err != nil {
		// The store logged the same entry with the same encoder rules.
		j.stepDown(fmt.Errorf("journal: entry %d does not encode: %w", e.Version, err))
		return
	}
	if len(j.ring) == 0 {
		j.ringFirst = e.Version
	}
	j.ring = append(j.ring, line)
	j.ringBytes += len(line)
	j.last = e.Version
	if _, ok := e.Op.(*meta.TermStart); ok && e.Term == j.term {
		j.termStart = e.Version
	}
	for j.ringBytes > j.cfg.MemoryBytes && len(j.ring) > 1 {
		j.ringBytes -= len(j.ring[0])
		j.ring[0] = nil
		j.ring = j.ring[1:]
		j.ringFirst++
	}
	for _, p := range j.peers {
		p.poke()
	}
}

func (p *mlPeer) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// WaitCommit returns once entry v is committed, or an error when the
// journal stepped down or no majority stored v within the commit
// timeout.
func (j *Journal) WaitCommit(ctx context.Context, v uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.commit >= v {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, j.cfg.CommitTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		j.mu.Lock()
		j.changed.Broadcast()
		j.mu.Unlock()
	})
	defer stop()
	for j.commit < v {
		if j.fenced != nil {
			return j.fenced
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("entry %d is not stored by %d of %d metaloggers (stored by: %s): %w",
				v, j.Majority(), j.cfg.Metaloggers, j.storedBy(v), err)
		}
		j.changed.Wait()
	}
	return nil
}

// storedBy lists the metaloggers that acknowledged v. Called with mu
// held.
func (j *Journal) storedBy(v uint64) string {
	var ids []string
	for id, a := range j.acked {
		if a >= v {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "none"
	}
	slices.Sort(ids)
	return strings.Join(ids, ", ")
}

// ack records that metalogger id stored everything up to v, and moves
// the commit point: the version a majority has, once that includes the
// TERM entry.
func (j *Journal) ack(p *mlPeer, v uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	p.heard = time.Now()
	if j.peers[p.id] != p || v <= j.acked[p.id] || v > j.last {
		return
	}
	j.acked[p.id] = v
	vals := make([]uint64, 0, len(j.acked))
	for _, a := range j.acked {
		vals = append(vals, a)
	}
	if len(vals) < j.Majority() {
		return
	}
	slices.Sort(vals)
	c := vals[len(vals)-j.Majority()]
	if j.termStart != 0 && c >= j.termStart && c > j.commit {
		j.commit = c
		j.serving = true
		j.changed.Broadcast()
	}
}

// stepDown stops acknowledging for good. Called with mu held.
func (j *Journal) stepDown(err error) {
	if j.fenced != nil {
		return
	}
	j.fenced = err
	close(j.fencedCh)
	j.log.Error("master steps down: no further operation will be acknowledged", "err", err)
	for m := range j.conns {
		m.Abort(wire.RefuseTerm, "the master steps down: "+err.Error())
	}
	j.changed.Broadcast()
}

// sawTerm handles a metalogger that accepted term t for another holder.
// Before the first commit a journal with no fixed term moves above it
// and asks everyone again; otherwise this master is fenced.
func (j *Journal) sawTerm(t uint64, holder, from string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fenced != nil || t < j.term {
		return
	}
	if j.cfg.Term == 0 && !j.serving && j.termStart == 0 {
		j.log.Info("a metalogger accepted a newer term; asking for the next one", "metalogger", from, "its_term", t, "holder", holder, "new_term", t+1)
		j.term = t + 1
		clear(j.granted)
		clear(j.acked)
		for m := range j.conns {
			m.Abort(0, "") // they reconnect and are asked for the new term
		}
		j.changed.Broadcast()
		return
	}
	j.stepDown(fmt.Errorf("metalogger %s accepted term %d for %q: this master (term %d) is fenced", from, t, holder, j.term))
}

// Start serves metaloggers on ln and returns once the master may serve
// clients: its term is accepted by a majority, the entries they had and
// it lacked are replayed into st, and its TERM entry is committed. It
// logs who is missing while it waits. Metaloggers go on being served
// until ctx ends.
func (j *Journal) Start(ctx context.Context, ln net.Listener, st JournalStore) error {
	version, term := st.Position()
	j.mu.Lock()
	if j.started {
		j.mu.Unlock()
		return errors.New("journal started twice")
	}
	j.started = true
	j.cfg.MetaID = st.MetaID()
	if len(j.ring) == 0 {
		j.last, j.ringFirst = version, version+1
	}
	if j.cfg.Term == 0 {
		j.term = max(j.term, term+1)
	} else if j.cfg.Term <= term {
		j.mu.Unlock()
		return fmt.Errorf("journal: term %d is not above the metadata's term %d", j.cfg.Term, term)
	}
	j.mu.Unlock()
	go j.accept(ctx, ln)
	go func() {
		<-ctx.Done()
		j.mu.Lock()
		for m := range j.conns {
			m.Abort(0, "")
		}
		j.changed.Broadcast()
		j.mu.Unlock()
	}()
	for {
		best, src, t, err := j.awaitMajority(ctx)
		if err != nil {
			return err
		}
		err = j.catchUp(ctx, st, best, src)
		if err == nil {
			err = st.StartTerm(ctx, t)
			if err == nil {
				j.log.Info("term started: a majority of metaloggers stores the log", "term", t, "majority", j.Majority(), "of", j.cfg.Metaloggers)
				return nil
			}
		}
		if errors.Is(err, errDiverged) || ctx.Err() != nil || j.Err() != nil {
			return err
		}
		// The metalogger we read from went away, or the term moved:
		// collect a majority again.
		j.log.Warn("starting the term failed; trying again", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(j.cfg.Heartbeat):
		}
	}
}

var errDiverged = errors.New("local changelog diverges from the metaloggers'")

// awaitMajority waits until a majority has accepted the current term
// and returns the best state among them and the peer that has it.
func (j *Journal) awaitMajority(ctx context.Context) (wire.MLState, *mlPeer, uint64, error) {
	stop := context.AfterFunc(ctx, func() {
		j.mu.Lock()
		j.changed.Broadcast()
		j.mu.Unlock()
	})
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				j.mu.Lock()
				j.log.Warn("waiting for a majority of metaloggers to accept the term", "term", j.term,
					"have", j.grantedIDs(), "need", j.Majority(), "of", j.cfg.Metaloggers)
				j.mu.Unlock()
			}
		}
	}()
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		if j.fenced != nil {
			return wire.MLState{}, nil, 0, j.fenced
		}
		if err := ctx.Err(); err != nil {
			return wire.MLState{}, nil, 0, err
		}
		if len(j.granted) >= j.Majority() {
			var best wire.MLState
			var src *mlPeer
			for id, s := range j.granted {
				if p := j.peers[id]; p != nil && (src == nil || s.LastTerm > best.LastTerm || s.LastTerm == best.LastTerm && s.Last > best.Last) {
					best, src = s, p
				}
			}
			if src != nil {
				return best, src, j.term, nil
			}
		}
		j.changed.Wait()
	}
}

// grantedIDs lists this term's grants. Called with mu held.
func (j *Journal) grantedIDs() string {
	ids := make([]string, 0, len(j.granted))
	for id := range j.granted {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return "[" + strings.Join(ids, ", ") + "]"
}

// catchUp reads from src the entries best has beyond the local log,
// after checking that the local log is a prefix of best's: a local tail
// of an older term that the majority does not have was never committed,
// and cutting it is a restore's job (mfsmetarestore, carpwatch).
func (j *Journal) catchUp(ctx context.Context, st JournalStore, best wire.MLState, src *mlPeer) error {
	version, term := st.Position()
	switch {
	case best.LastTerm < term || best.LastTerm == term && best.Last <= version:
		return nil // the local log is the newest
	case best.LastTerm > term && version > 0:
		if best.Last < version {
			return fmt.Errorf("%w: this master holds versions up to %d (term %d), metalogger %s holds up to %d of the newer term %d; restore from a metalogger's files (mfsmetarestore -a) first",
				errDiverged, version, term, src.id, best.Last, best.LastTerm)
		}
		lines, err := j.fetch(ctx, src, version, 1)
		if err != nil {
			return err
		}
		e, err := changelog.ParseLine(firstLine(lines))
		if err != nil {
			return fmt.Errorf("metalogger %s sent a bad line: %w", src.id, err)
		}
		if e.Version != version || e.Term != term {
			return fmt.Errorf("%w at version %d: here term %d, on metalogger %s entry %d has term %d; restore from a metalogger's files (mfsmetarestore -a) first",
				errDiverged, version, term, src.id, e.Version, e.Term)
		}
	}
	j.log.Info("reading entries this master lacks from a metalogger", "metalogger", src.id, "from", version+1, "to", best.Last)
	for version < best.Last {
		lines, err := j.fetch(ctx, src, version+1, mlFetchBytes)
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			return fmt.Errorf("metalogger %s has nothing from version %d on, though it reported %d", src.id, version+1, best.Last)
		}
		var entries []meta.Entry
		for len(lines) > 0 {
			line := firstLine(lines)
			lines = lines[len(line):]
			e, err := changelog.ParseLine(line)
			if err != nil {
				return fmt.Errorf("metalogger %s sent a bad line: %w", src.id, err)
			}
			if e.Version != version+1 {
				return fmt.Errorf("metalogger %s sent version %d, wanted %d", src.id, e.Version, version+1)
			}
			entries = append(entries, e)
			version++
		}
		if err := st.Replay(entries); err != nil {
			return fmt.Errorf("replaying entries from metalogger %s: %w", src.id, err)
		}
	}
	return nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1]
	}
	return b
}

func (j *Journal) fetch(ctx context.Context, p *mlPeer, from uint64, maxBytes uint32) ([]byte, error) {
	var out wire.MLLines
	if err := p.mux.CallInto(ctx, &wire.MLFetch{From: from, MaxBytes: maxBytes}, &out); err != nil {
		return nil, fmt.Errorf("fetch from metalogger %s: %w", p.id, err)
	}
	return out.Lines, nil
}

func (j *Journal) accept(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				j.log.Error("metalogger listener failed", "err", err)
			}
			return
		}
		go j.serveConn(ctx, nc)
	}
}

// allowed tells whether a metalogger may connect from addr.
func (j *Journal) allowed(ctx context.Context, addr net.Addr) bool {
	if len(j.cfg.Hosts) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, h := range j.cfg.Hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			if a.Unmap() == ip {
				return true
			}
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		if err != nil {
			j.log.Warn("metalogger host does not resolve", "host", h, "err", err)
			continue
		}
		for _, a := range ips {
			if a.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// serveConn runs one metalogger connection: handshake, grant, matching
// logs, then the stream until the connection ends.
func (j *Journal) serveConn(ctx context.Context, nc net.Conn) {
	from := nc.RemoteAddr().String()
	if !j.allowed(ctx, nc.RemoteAddr()) {
		j.log.Warn("metalogger refused: its host is not in METALOGGERS", "addr", from, "hosts", strings.Join(j.cfg.Hosts, ","))
		nc.Close()
		return
	}
	term := j.Term()
	conn, err := wire.ServerHandshake(ctx, nc, wire.ServerConfig{
		Role: wire.RoleMaster, Name: j.cfg.Name, MetaID: j.cfg.MetaID, Term: term,
		Serve: wire.Roles(wire.RoleMetalogger), AuthCode: j.cfg.AuthCode,
	})
	if err != nil {
		nc.Close()
		var re *wire.RefusedError
		if errors.As(err, &re) && re.Code == wire.RefuseTerm && re.PeerTerm > 0 {
			j.sawTerm(re.PeerTerm, "", from)
			return
		}
		j.log.Warn("metalogger refused", "addr", from, "err", err)
		return
	}
	p := &mlPeer{addr: from, wake: make(chan struct{}, 1), heard: time.Now()}
	p.mux = wire.NewMux(conn, wire.MuxConfig{
		Handler: func(ctx context.Context, f wire.Frame) (wire.Message, error) { return j.handle(p, f) },
		Inline:  func(t wire.Type) bool { return t == wire.TypeMLAck },
	})
	defer p.mux.Close()
	j.mu.Lock()
	if j.fenced != nil || ctx.Err() != nil {
		j.mu.Unlock()
		return
	}
	j.conns[p.mux] = struct{}{}
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		delete(j.conns, p.mux)
		if j.peers[p.id] == p {
			delete(j.peers, p.id)
			if !j.serving {
				delete(j.granted, p.id)
			}
			j.changed.Broadcast()
		}
		j.mu.Unlock()
	}()
	err = j.run(ctx, p, term)
	var re *wire.RefusedError
	if errors.As(p.mux.Err(), &re) && re.ByPeer && re.Code == wire.RefuseTerm {
		// It accepted a newer term (a fence, or another master).
		j.sawTerm(term, re.Message, p.name())
		return
	}
	if err != nil && ctx.Err() == nil && j.Err() == nil {
		j.log.Warn("metalogger connection ended", "metalogger", p.name(), "err", err)
	}
}

func (p *mlPeer) name() string {
	if p.id == "" {
		return p.addr
	}
	return p.id + " (" + p.addr + ")"
}

// handle serves a metalogger's messages: acknowledgements and dump
// reads.
func (j *Journal) handle(p *mlPeer, f wire.Frame) (wire.Message, error) {
	switch f.Type {
	case wire.TypeMLAck:
		var m wire.MLAck
		if err := wire.Unmarshal(f.Payload, &m); err != nil {
			p.mux.Abort(wire.RefuseProtocol, err.Error())
			return nil, err
		}
		j.ack(p, m.Version)
		return nil, nil
	case wire.TypeMLDumpRead:
		var m wire.MLDumpRead
		if err := wire.Unmarshal(f.Payload, &m); err != nil {
			return nil, err
		}
		return j.readDump(&m)
	}
	return nil, fmt.Errorf("%s is not a metalogger's message: %w", f.Type, syscall.EPROTO)
}

// readDump answers part of the newest dump, once it holds nothing a
// later master could cut.
func (j *Journal) readDump(m *wire.MLDumpRead) (wire.Message, error) {
	found, err := restore.Scan(j.cfg.Dir, j.cfg.MetaID)
	if err != nil || len(found.Dumps) == 0 {
		return nil, fmt.Errorf("no dump in %s (%v): %w", j.cfg.Dir, err, syscall.ENOENT)
	}
	d := found.Dumps[0]
	j.mu.Lock()
	commit := j.commit
	j.mu.Unlock()
	if d.Header.Version > commit {
		return nil, fmt.Errorf("dump version %d is past the commit point %d: %w", d.Header.Version, commit, syscall.EAGAIN)
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := m.Offset
	if m.Version != d.Header.Version {
		off = 0
	}
	size := min(int64(m.Size), mlDumpPart, max(fi.Size()-int64(off), 0))
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, int64(off)); err != nil && err != io.EOF {
		return nil, err
	}
	return &wire.MLDumpData{Version: d.Header.Version, Total: uint64(fi.Size()), Data: buf}, nil
}

// run asks p to accept term, matches its log with ours and feeds it.
func (j *Journal) run(ctx context.Context, p *mlPeer, term uint64) error {
	j.mu.Lock()
	commit := j.commit
	j.mu.Unlock()
	var st wire.MLState
	if err := p.mux.CallInto(ctx, &wire.MLGrant{Term: term, Holder: j.cfg.Holder, Commit: commit}, &st); err != nil {
		return fmt.Errorf("grant of term %d: %w", term, err)
	}
	p.id = st.ID
	if st.Term != term || st.Holder != j.cfg.Holder {
		j.sawTerm(st.Term, st.Holder, p.name())
		return fmt.Errorf("it holds term %d for %q", st.Term, st.Holder)
	}
	j.mu.Lock()
	if j.term != term || j.fenced != nil {
		j.mu.Unlock()
		return errors.New("the term moved on")
	}
	if old := j.peers[p.id]; old != nil {
		old.mux.Abort(0, "") // the same metalogger again: the old link is dead
	}
	j.peers[p.id] = p
	j.granted[p.id] = st
	j.changed.Broadcast()
	// A metalogger ahead of a master that is starting may hold what the
	// master is about to read (catchUp): its log is matched against
	// ours once ours reaches as far, or the term has begun.
	waited := make(chan struct{})
	go func() {
		select {
		case <-p.mux.Done():
			j.mu.Lock()
			j.changed.Broadcast()
			j.mu.Unlock()
		case <-waited:
		}
	}()
	for st.Last > j.last && j.termStart == 0 && j.fenced == nil && p.mux.Err() == nil {
		j.changed.Wait()
	}
	close(waited)
	j.mu.Unlock()
	next, err := j.match(ctx, p, &st)
	if err != nil {
		return err
	}
	if st.Last == 0 {
		// A new metalogger starts where our log starts; it builds its
		// replica from our dump.
		next = max(next, j.oldest())
	}
	j.mu.Lock()
	j.granted[p.id] = st
	j.mu.Unlock()
	if st.Last > 0 {
		// What it has of our log counts: the match made sure it is ours.
		j.ack(p, st.Last)
	}
	j.log.Info("metalogger joined", "metalogger", p.name(), "term", term, "last", st.Last, "last_term", st.LastTerm, "from", next)
	return j.feed(ctx, p, term, next)
}

// match finds where p's log stops agreeing with ours and returns the
// first version to send it. A log ending in an entry we have with the
// same term agrees up to there; otherwise its tail past its commit
// point came from an older master and is cut.
func (j *Journal) match(ctx context.Context, p *mlPeer, st *wire.MLState) (uint64, error) {
	if st.Last <= st.Committed {
		return st.Last + 1, nil
	}
	if t, ok := j.termAt(st.Last); ok && t == st.LastTerm {
		return st.Last + 1, nil
	}
	j.log.Warn("cutting a metalogger's tail from an older term", "metalogger", p.name(), "last", st.Last, "last_term", st.LastTerm, "keep_through", st.Committed)
	var nst wire.MLState
	if err := p.mux.CallInto(ctx, &wire.MLTruncate{After: st.Committed}, &nst); err != nil {
		return 0, fmt.Errorf("truncate after %d: %w", st.Committed, err)
	}
	if nst.Last != st.Committed {
		return 0, fmt.Errorf("asked to keep entries through %d, it kept through %d", st.Committed, nst.Last)
	}
	*st = nst
	return st.Last + 1, nil
}

// termAt is the term of our entry v, from memory or the files.
func (j *Journal) termAt(v uint64) (uint64, bool) {
	if v == 0 {
		return 0, true
	}
	j.mu.Lock()
	if v > j.last {
		j.mu.Unlock()
		return 0, false
	}
	if v >= j.ringFirst {
		line := j.ring[v-j.ringFirst]
		j.mu.Unlock()
		return lineTerm(line)
	}
	j.mu.Unlock()
	t, _, term, err := j.openFiles(v)
	if err != nil {
		return 0, false
	}
	t.Close()
	return term, true
}

// openFiles finds our entry v in the files and returns it with a Tail
// positioned after it. The master's own changelog files come first; a
// version before them may be in metalogger files that a restore brought
// into the data directory (carpwatch fetches those).
func (j *Journal) openFiles(v uint64) (*changelog.Tail, []byte, uint64, error) {
	var firstErr error
	for _, prefix := range []string{changelog.PrefixMaster, changelog.PrefixMetalogger} {
		t, err := changelog.OpenTail(j.cfg.Dir, prefix, v)
		if err == nil {
			var line []byte
			var e meta.Entry
			if line, e, err = t.Next(); err == nil && e.Version == v {
				return t, line, e.Term, nil
			}
			t.Close()
			if err == nil {
				err = fmt.Errorf("%s files gave version %d", prefix, e.Version)
			}
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, nil, 0, fmt.Errorf("version %d is in no changelog file of %s: %w", v, j.cfg.Dir, firstErr)
}

// oldest is the oldest version we can send: from the files, else from
// memory.
func (j *Journal) oldest() uint64 {
	j.mu.Lock()
	o := j.ringFirst
	j.mu.Unlock()
	for _, prefix := range []string{changelog.PrefixMaster, changelog.PrefixMetalogger} {
		files, err := changelog.List(j.cfg.Dir, prefix)
		if err != nil || len(files) == 0 {
			continue
		}
		for i := range files { // oldest first
			fr, err := changelog.OpenFile(files[i].Path)
			if err != nil {
				continue
			}
			e, err := fr.Next()
			fr.Close()
			if err == nil {
				o = min(o, e.Version)
				break
			}
		}
	}
	return o
}

// lineTerm reads the TERM field of a changelog line.
func lineTerm(line []byte) (uint64, bool) {
	f := bytes.SplitN(line, []byte("|"), 3)
	if len(f) < 3 {
		return 0, false
	}
	t, err := strconv.ParseUint(string(f[1]), 10, 64)
	return t, err == nil
}

// feed streams entries from next on to p until the connection ends,
// with a heartbeat when there is nothing to send.
func (j *Journal) feed(ctx context.Context, p *mlPeer, term, next uint64) error {
	var tail *changelog.Tail
	defer func() {
		if tail != nil {
			tail.Close()
		}
	}()
	tick := time.NewTicker(j.cfg.Heartbeat)
	defer tick.Stop()
	sentCommit := uint64(0)
	lastSend := time.Time{}
	for {
		j.mu.Lock()
		if j.fenced != nil || j.term != term {
			j.mu.Unlock()
			return nil
		}
		last, commit, ringFirst := j.last, j.commit, j.ringFirst
		if time.Since(p.heard) > 10*j.cfg.Heartbeat {
			j.mu.Unlock()
			return fmt.Errorf("no word from it for %s", 10*j.cfg.Heartbeat)
		}
		var lines []byte
		n := uint64(0)
		if next >= ringFirst {
			for v := next; v <= last && len(lines) < mlBatchBytes; v++ {
				lines = append(lines, j.ring[v-ringFirst]...)
				n++
			}
		}
		j.mu.Unlock()
		if next < ringFirst && next <= last {
			// Behind memory: read our files.
			for v := next; v < ringFirst && len(lines) < mlBatchBytes; v++ {
				var line []byte
				var err error
				if tail != nil {
					var e meta.Entry
					if line, e, err = tail.Next(); err != nil || e.Version != v {
						tail.Close()
						tail, line = nil, nil
					}
				}
				if tail == nil {
					if tail, line, _, err = j.openFiles(v); err != nil {
						return fmt.Errorf("it needs version %d: %w", v, err)
					}
				}
				lines = append(lines, line...)
				n++
			}
			if next+n >= ringFirst {
				tail.Close()
				tail = nil
			}
		}
		if n > 0 || commit != sentCommit || time.Since(lastSend) >= j.cfg.Heartbeat {
			if err := p.mux.Send(&wire.MLAppend{Term: term, Commit: commit, Lines: lines}); err != nil {
				return err
			}
			next += n
			sentCommit = commit
			lastSend = time.Now()
		}
		if n > 0 {
			continue
		}
		select {
		case <-p.wake:
		case <-tick.C:
		case <-p.mux.Done():
			return p.mux.Err()
		case <-ctx.Done():
			return nil
		}
	}
}

// Ready is whether the term's TERM entry is committed: the master may
// serve.
func (j *Journal) Ready() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.serving
}

// MLStatus is one metalogger as the master sees it.
type MLStatus struct {
	ID, Addr string
	Acked    uint64 // last version it stored
	Lag      uint64 // versions appended here that it has not acknowledged
}

// Status lists the connected metaloggers and the commit point.
func (j *Journal) Status() (commit uint64, mls []MLStatus) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, p := range j.peers {
		a := j.acked[id]
		mls = append(mls, MLStatus{ID: id, Addr: p.addr, Acked: a, Lag: j.last - min(a, j.last)})
	}
	slices.SortFunc(mls, func(a, b MLStatus) int { return strings.Compare(a.ID, b.ID) })
	return j.commit, mls
}
