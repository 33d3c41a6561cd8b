package chunkio

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/carpfs/carpfs/internal/wire"
)

// Read fills buf with the chunk's bytes at off, from the first of
// servers (starting at a random one) that answers correctly: a piece
// that fails on one server, for
// any reason (down, ESTALE, ENOENT, EBADMSG for a damaged block), is
// asked of the next. Bytes past the copy's data read as zeros. Reads of
// more than wire.CSMaxIO are split into requests issued together. When
// every server failed, the error names each with its reason.
func (p *Pool) Read(ctx context.Context, id uint64, version uint32, servers []string, off uint32, buf []byte) error {
	if err := checkRange(off, len(buf)); err != nil {
		return fmt.Errorf("chunkio: read %s: %w", chunkName(id, version), err)
	}
	if len(servers) == 0 {
		return fmt.Errorf("chunkio: read %s: no servers to read from", chunkName(id, version))
	}
	todo := split(len(buf))
	var errs []error
	// Start at a random copy: reads spread over the copies, and a damaged
	// one is found by readers rather than only by the scrub.
	first := 0
	if len(servers) > 1 {
		first = rand.IntN(len(servers))
	}
	for i := range servers {
		if len(todo) == 0 {
			break
		}
		addr := servers[(first+i)%len(servers)]
		failed, _, err := p.readPieces(ctx, addr, id, version, off, buf, todo)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %s: %w", addr, err))
			if ctx.Err() != nil {
				break
			}
		}
		todo = failed
	}
	if len(todo) == 0 {
		return nil
	}
	return &readError{chunk: chunkName(id, version), errs: errs}
}

// ReadFrom reads the chunk's bytes at off into buf from the server at
// addr alone, and returns how many of them are the copy's data: when n <
// len(buf) the copy ends at off+n and the rest of buf is zeros. It is
// what a replicating chunkserver needs, which must give its copy the
// same length.
func (p *Pool) ReadFrom(ctx context.Context, addr string, id uint64, version uint32, off uint32, buf []byte) (n int, err error) {
	if err := checkRange(off, len(buf)); err != nil {
		return 0, fmt.Errorf("chunkio: read %s: %w", chunkName(id, version), err)
	}
	_, n, err = p.readPieces(ctx, addr, id, version, off, buf, split(len(buf)))
	if err != nil {
		return 0, fmt.Errorf("chunkio: read %s from %s: %w", chunkName(id, version), addr, err)
	}
	return n, nil
}

// readError is a read that failed on every server.
type readError struct {
	chunk string
	errs  []error // one per server, each naming it
}

func (e *readError) Error() string {
	var b strings.Builder
	b.WriteString("chunkio: read " + e.chunk + ": no copy could be read: ")
	for i, err := range e.errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *readError) Unwrap() []error { return e.errs }

// piece is buf[lo:hi], one request.
type piece struct{ lo, hi int }

// split cuts n bytes into requests of at most wire.CSMaxIO.
func split(n int) []piece {
	ps := make([]piece, 0, (n+wire.CSMaxIO-1)/wire.CSMaxIO)
	for lo := 0; lo < n; lo += wire.CSMaxIO {
		ps = append(ps, piece{lo, min(lo+wire.CSMaxIO, n)})
	}
	return ps
}

// readPieces reads ps from addr at once. It returns the pieces that
// failed with the first one's error, and where in buf the copy's data
// ends, as far as the pieces that arrived tell.
func (p *Pool) readPieces(ctx context.Context, addr string, id uint64, version uint32, off uint32, buf []byte, ps []piece) (failed []piece, dataEnd int, err error) {
	errs := make([]error, len(ps))
	ends := make([]int, len(ps))
	if len(ps) == 1 {
		ends[0], errs[0] = p.readPiece(ctx, addr, id, version, off, buf, ps[0])
	} else {
		var wg sync.WaitGroup
		for i, pc := range ps {
			wg.Go(func() { ends[i], errs[i] = p.readPiece(ctx, addr, id, version, off, buf, pc) })
		}
		wg.Wait()
	}
	for i, e := range errs {
		if e != nil {
			failed = append(failed, ps[i])
			if err == nil {
				err = e
			}
		}
		dataEnd = max(dataEnd, ends[i])
	}
	return failed, dataEnd, err
}

// readPiece reads one piece and returns where the data it got ends in
// buf (0 when it got none).
func (p *Pool) readPiece(ctx context.Context, addr string, id uint64, version uint32, off uint32, buf []byte, pc piece) (int, error) {
	dst := buf[pc.lo:pc.hi]
	var resp wire.CSData
	req := &wire.CSRead{ID: id, Version: version, Offset: off + uint32(pc.lo), Size: uint32(len(dst))}
	if err := p.call(ctx, addr, 0, req, &resp); err != nil {
		return 0, err
	}
	if len(resp.Data) > len(dst) {
		return 0, fmt.Errorf("chunkio: %d bytes in answer to a read of %d: %w", len(resp.Data), len(dst), wire.ErrMessage)
	}
	n := copy(dst, resp.Data)
	clear(dst[n:])
	if n == 0 {
		return 0, nil
	}
	return pc.lo + n, nil
}

// Write writes data at off of the chunk on every server of chain: it is
// sent to chain[0], which forwards it to chain[1:]. It returns nil only
// when every copy has the data, else a *ChainError naming the server
// that failed. Writes of more than wire.CSMaxIO are split into requests
// issued together; a piece that fails fails the whole write, and the
// others may have reached the disks.
func (p *Pool) Write(ctx context.Context, id uint64, version uint32, chain []string, off uint32, data []byte) error {
	if err := checkRange(off, len(data)); err != nil {
		return fmt.Errorf("chunkio: write %s: %w", chunkName(id, version), err)
	}
	if len(chain) == 0 {
		return fmt.Errorf("chunkio: write %s: empty chain", chunkName(id, version))
	}
	ps := split(len(data))
	write := func(pc piece) error {
		return p.chainCall(ctx, chain, &wire.CSWrite{
			ID: id, Version: version, Offset: off + uint32(pc.lo), Data: data[pc.lo:pc.hi], Chain: chain[1:],
		})
	}
	if len(ps) <= 1 {
		if len(ps) == 0 {
			return nil
		}
		return write(ps[0])
	}
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, pc := range ps {
		wg.Go(func() { errs[i] = write(pc) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Sync makes the chunk durable (fsync) on every server of chain, sent
// and forwarded as Write is, with the same errors.
func (p *Pool) Sync(ctx context.Context, id uint64, version uint32, chain []string) error {
	if len(chain) == 0 {
		return fmt.Errorf("chunkio: sync %s: empty chain", chunkName(id, version))
	}
	return p.chainCall(ctx, chain, &wire.CSSync{ID: id, Version: version, Chain: chain[1:]})
}

// chainCall sends a chained request to chain[0] and says whom to blame
// when it fails.
func (p *Pool) chainCall(ctx context.Context, chain []string, req wire.Message) error {
	err := p.call(ctx, chain[0], len(chain)-1, req, &wire.Ok{})
	if err == nil {
		return nil
	}
	var re *wire.RemoteError
	if errors.As(err, &re) {
		// A server can only blame one it was asked to forward to; any
		// other name is a confused or lying peer, which is blamed itself.
		if srv, reason, ok := parseBlame(re.Message); ok && slices.Contains(chain[1:], srv) {
			return &ChainError{Server: srv, Err: &wire.RemoteError{Errno: re.Errno, Message: reason}}
		}
	}
	return &ChainError{Server: chain[0], Err: err}
}

// ChainError is a write or sync that did not reach every copy. Server is
// the data address of the server that failed: the first of the chain when
// it could not be reached, failed itself, or did not say.
type ChainError struct {
	Server string
	Err    error
}

func (e *ChainError) Error() string {
	return "chunkio: chunkserver " + e.Server + " failed: " + e.Err.Error()
}

func (e *ChainError) Unwrap() error { return e.Err }

// blamePrefix and blameSep frame the failed server's address in an Error
// message; see the package doc.
const (
	blamePrefix = "server "
	blameSep    = " failed: "
)

// Blame returns the error a chunkserver answers a chained request with
// when the server at addr, further down the chain, failed with err: its
// message names addr so that the client can parse it back (see the
// package doc), and it wraps err, so the errno err carries is the
// reply's.
func Blame(addr string, err error) error { return &blamed{addr: addr, err: err} }

type blamed struct {
	addr string
	err  error
}

func (b *blamed) Error() string {
	reason := b.err.Error()
	var re *wire.RemoteError
	if errors.As(b.err, &re) {
		reason = re.Message // the errno travels in the reply's own field
	}
	return blamePrefix + b.addr + blameSep + reason
}

func (b *blamed) Unwrap() error { return b.err }

// parseBlame splits a message made by Blame.
func parseBlame(msg string) (addr, reason string, ok bool) {
	rest, ok := strings.CutPrefix(msg, blamePrefix)
	if !ok {
		return "", "", false
	}
	addr, reason, ok = strings.Cut(rest, blameSep)
	if !ok || addr == "" || strings.ContainsAny(addr, " \t\n") {
		return "", "", false
	}
	return addr, reason, true
}

// checkRange refuses n bytes at off that do not fit in a chunk.
func checkRange(off uint32, n int) error {
	if uint64(off)+uint64(n) > ChunkSize {
		return fmt.Errorf("%d bytes at offset %d pass the chunk's end (%d)", n, off, ChunkSize)
	}
	return nil
}

func chunkName(id uint64, version uint32) string {
	return fmt.Sprintf("chunk %016X version %d", id, version)
}
