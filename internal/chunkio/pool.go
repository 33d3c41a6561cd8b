// Package chunkio is the client side of a chunkserver's data port (9422):
// it reads chunk copies, writes along a chain of copies, and syncs them.
// Mounts use it for file data, chunkservers to forward a write down its
// chain and to copy chunks when the master asks them to replicate.
//
// A Pool keeps a few pipelined connections (wire.Mux) to every
// chunkserver it has talked to and redials one that failed, so requests
// to one server share its connections and many run at once. Large reads
// and writes are split into requests of at most wire.CSMaxIO bytes, all
// issued together.
//
// # Failures in a chain
//
// A write goes to the first server of its chain, which stores it and
// forwards it to the rest, and answers Ok only when every copy has it.
// When a server further down fails, the client must learn which one, so
// that it can tell the master (ChunkWriteEnd's Bad list). The convention,
// also in docs/PROTOCOL.md: the message of an Error answering CSWrite or
// CSSync that starts with
//
//	server <host:port> failed: <reason>
//
// blames that server of the request's Chain; any other Error blames the
// server that answered. A chunkserver builds such messages with Blame and
// passes on the ones it receives from downstream unchanged, so the name
// travels back up the chain intact. Write and Sync return the result as a
// *ChainError.
//
// # Timeouts
//
// Config.Timeout bounds dialing and the handshake, and each request. A
// request its server forwards to k more servers is given (k+1) times
// Timeout, so that every server up the chain waits longer than the one
// below it: the server that blames a silent successor answers before its
// own caller gives up on it and blames the wrong server.
package chunkio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carpfs/carpfs/internal/wire"
)

// ChunkSize is the size of a chunk: the data port's offsets and lengths
// stay within it (the same 64 MiB as meta.ChunkSize and
// chunkstore.ChunkSize).
const ChunkSize = 64 << 20

// DefaultTimeout is Config.Timeout's default.
const DefaultTimeout = 10 * time.Second

// connsPerServer is how many connections a Pool keeps to one server;
// requests go round-robin over them. Two let two readers decode and
// checksum frames at once, and keep one 4 MiB frame from holding up
// every request to the server. On a 2-core VM one, two and four measure
// the same (BenchmarkChainWrite and BenchmarkRead in
// internal/app/chunkserver).
const connsPerServer = 2

// ErrClosed marks a call on a closed Pool.
var ErrClosed = errors.New("chunkio: pool closed")

// Config configures a Pool.
type Config struct {
	Role wire.Role // wire.RoleClient for mounts, wire.RoleChunkserver for chunkservers
	Name string    // this peer's name in handshakes and the servers' logs
	// MetaID is the file system this peer belongs to; a chunkserver of
	// another refuses the connection. 0 learns it from the server.
	MetaID uint64
	// AuthCode is the shared secret chunkservers prove to each other;
	// clients leave it empty.
	AuthCode []byte
	// Term gives the highest master term this peer has seen, for the
	// Hello; nil means 0.
	Term func() uint64
	// Timeout bounds dialing with the handshake, and every request (see
	// the package doc for forwarded ones); 0 means DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger // nil discards
}

// Pool holds connections to chunkservers' data ports, by address. It is
// safe for concurrent use.
type Pool struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // ends dials in progress on Close
	cancel context.CancelFunc

	mu      sync.Mutex
	servers map[string]*server
	closed  bool
}

// server is the connections to one address.
type server struct {
	next  atomic.Uint32
	slots [connsPerServer]slot
}

// slot is one connection, or the dial that will make it.
type slot struct {
	mu   sync.Mutex
	mux  *wire.Mux
	dial *dialCall // in progress, shared by every request that waits for it
}

type dialCall struct {
	done chan struct{}
	mux  *wire.Mux
	err  error
}

// NewPool returns an empty Pool: it dials a server when first asked to
// talk to it.
func NewPool(cfg Config) *Pool {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Term == nil {
		cfg.Term = func() uint64 { return 0 }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, servers: map[string]*server{}}
}

// Close ends every connection; calls in flight fail, and later ones fail
// with ErrClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	servers := p.servers
	p.servers = nil
	p.mu.Unlock()
	p.cancel()
	for _, s := range servers {
		for i := range s.slots {
			sl := &s.slots[i]
			sl.mu.Lock()
			m := sl.mux
			sl.mux = nil
			sl.mu.Unlock()
			if m != nil {
				_ = m.Close()
			}
		}
	}
	return nil
}

// conn returns a live connection to addr, dialing if needed, and
// whether it was dialled for this request. Requests that find the same
// slot unconnected wait for one dial together, so a server that is down
// costs one attempt, not one per request.
func (p *Pool) conn(ctx context.Context, addr string) (m *wire.Mux, fresh bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, ErrClosed
	}
	s := p.servers[addr]
	if s == nil {
		s = &server{}
		p.servers[addr] = s
	}
	p.mu.Unlock()

	sl := &s.slots[s.next.Add(1)%connsPerServer]
	sl.mu.Lock()
	if m := sl.mux; m != nil {
		select {
		case <-m.Done():
			sl.mux = nil // lost; its reader closed the socket
		default:
			sl.mu.Unlock()
			return m, false, nil
		}
	}
	d := sl.dial
	if d == nil {
		d = &dialCall{done: make(chan struct{})}
		sl.dial = d
		go p.dial(addr, sl, d)
	}
	sl.mu.Unlock()
	select {
	case <-d.done:
		return d.mux, true, d.err
	case <-ctx.Done():
		return nil, false, context.Cause(ctx)
	}
}

// dial connects slot sl to addr and publishes the outcome to d's waiters.
// It runs on its own, bounded by Timeout and Close, so a waiter that
// gives up does not abort a dial others wait for.
func (p *Pool) dial(addr string, sl *slot, d *dialCall) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	m, err := p.handshake(ctx, addr)
	sl.mu.Lock()
	sl.dial = nil
	if err == nil {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			_ = m.Close()
			m, err = nil, ErrClosed
		} else {
			sl.mux = m
		}
	}
	sl.mu.Unlock()
	d.mux, d.err = m, err
	close(d.done)
	if err != nil {
		p.log.Debug("chunkio: cannot connect to a chunkserver", "server", addr, "err", err)
	}
}

func (p *Pool) handshake(ctx context.Context, addr string) (*wire.Mux, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("chunkio: dial %s: %w", addr, err)
	}
	conn, err := wire.ClientHandshake(ctx, nc, wire.ClientConfig{
		Role: p.cfg.Role, Name: p.cfg.Name, MetaID: p.cfg.MetaID, Term: p.cfg.Term(),
		AuthCode: p.cfg.AuthCode, PeerRole: wire.RoleChunkserver, Timeout: p.cfg.Timeout,
	})
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("chunkio: connect to %s: %w", addr, err)
	}
	return wire.NewMux(conn, wire.MuxConfig{}), nil
}

// call sends req to addr and decodes the reply into resp. The request
// may wait (forwards+1) × Timeout: forwards is the number of servers
// addr passes it on to.
//
// A connection can die while idle without the Pool noticing before it
// hands it out (the server restarted, say). A request that fails on such
// a connection for any reason but the server's answer or the deadline is
// sent again, on another or a new connection: every data port request
// may run twice, since a read changes nothing and a write or sync run
// again leaves the same result.
func (p *Pool) call(ctx context.Context, addr string, forwards int, req, resp wire.Message) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(forwards+1)*p.cfg.Timeout)
	defer cancel()
	for try := 0; ; try++ {
		m, fresh, err := p.conn(ctx, addr)
		if err != nil {
			return err
		}
		err = m.CallInto(ctx, req, resp)
		var re *wire.RemoteError
		if err == nil || fresh || try == connsPerServer || errors.As(err, &re) || ctx.Err() != nil {
			return err
		}
		p.log.Debug("chunkio: connection lost; sending again", "server", addr, "req", req.Type(), "err", err)
	}
}
