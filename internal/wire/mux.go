package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// DefaultMaxInFlight is how many of the peer's requests a Mux serves at
// once by default. Beyond it the Mux stops reading, and TCP pushes back
// on the peer.
const DefaultMaxInFlight = 64

// ErrClosed marks a call that failed because its connection ended; see
// ClosedError.
var ErrClosed = errors.New("connection closed")

// ClosedError says why a Mux's connection ended. It matches ErrClosed,
// and unwraps to the cause: io.EOF when the peer hung up, a FrameError
// for a corrupt stream, a RefusedError when the peer refused, a network
// error, or nil when Close was called.
type ClosedError struct {
	Peer  string
	Cause error
}

func (e *ClosedError) Error() string {
	if e.Cause == nil {
		return "connection to " + e.Peer + " closed"
	}
	return "connection to " + e.Peer + " lost: " + e.Cause.Error()
}

// Is makes errors.Is(err, ErrClosed) true.
func (e *ClosedError) Is(target error) bool { return target == ErrClosed }

func (e *ClosedError) Unwrap() error { return e.Cause }

// RemoteError is an Error reply: the peer ran the request and it failed.
// It unwraps to its errno, so errors.Is(err, syscall.ENOENT) works.
type RemoteError struct {
	Errno   syscall.Errno
	Message string
}

func (e *RemoteError) Error() string {
	return "peer: " + e.Message + " (" + e.Errno.Error() + ")"
}

func (e *RemoteError) Unwrap() error { return e.Errno }

// Handler serves one request or one-way message from the peer. It
// returns the reply, or an error that the Mux sends as an Error reply
// (with the errno it wraps, else EIO). The reply to a one-way message
// (request id 0) is dropped. ctx ends when the connection does. req's
// payload belongs to the handler.
type Handler func(ctx context.Context, req Frame) (Message, error)

// MuxConfig configures a Mux.
type MuxConfig struct {
	// Handler serves the peer's requests; nil answers every request with
	// ENOSYS, for a side that only calls.
	Handler Handler
	// MaxInFlight is how many handlers run at once; 0 means
	// DefaultMaxInFlight. 1 serves requests one at a time in the order
	// they arrived, for links whose requests depend on each other.
	MaxInFlight int
	// Inline, if set, names request types whose handler never waits (a
	// lookup in memory, say): those are served by the goroutine that
	// reads the connection, which spares a goroutine start and the wake
	// of another thread per request: on small machines, most of a round
	// trip. Requests behind an inline one wait for it, so a handler that
	// may block (on a disk, a lock, another peer) must not be inline.
	Inline func(Type) bool
}

// Mux runs a session: any number of concurrent calls with replies
// matched by request id, and the peer's requests served by a handler,
// both on one connection. Either side of a connection may run one: a
// mount calls its master, a master serves its mounts and also calls its
// chunkservers on the connections they opened.
//
// One goroutine reads the connection. A reply goes to the call waiting
// for its id; a request starts a handler goroutine (unless it is
// Inline) whose reply is sent whenever it is ready, so replies leave in
// any order. When the
// connection ends, for any reason, every waiting call fails with a
// ClosedError saying why, and so does every later one.
type Mux struct {
	c       *Conn
	handler Handler
	inline  func(Type) bool
	sem     chan struct{}
	ctx     context.Context // handlers' context, cancelled by fail
	cancel  context.CancelFunc

	mu      sync.Mutex
	nextID  uint64
	waiters map[uint64]chan Frame
	err     *ClosedError // set once, when the connection ends

	done     chan struct{} // closed when the reader has returned
	handlers sync.WaitGroup
}

// NewMux starts serving c. Close it when done.
func NewMux(c *Conn, cfg MuxConfig) *Mux {
	n := cfg.MaxInFlight
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		c: c, handler: cfg.Handler, inline: cfg.Inline, sem: make(chan struct{}, n),
		ctx: ctx, cancel: cancel,
		waiters: make(map[uint64]chan Frame),
		done:    make(chan struct{}),
	}
	go m.read()
	return m
}

// Conn returns the session the Mux runs.
func (m *Mux) Conn() *Conn { return m.c }

// Call sends req and waits for its reply, or for ctx, or for the
// connection to end. An Error reply comes back as a *RemoteError. If ctx
// ends first the call is forgotten and a late reply is dropped; the
// request may still have run on the peer.
func (m *Mux) Call(ctx context.Context, req Message) (Frame, error) {
	ch := make(chan Frame, 1)
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), m.err)
	}
	m.nextID++
	id := m.nextID
	m.waiters[id] = ch
	m.mu.Unlock()

	if err := m.c.W.Send(id, 0, req); err != nil {
		m.forget(id)
		m.writeFailed()
		if cerr := m.Err(); cerr != nil {
			// The stream broke: say so as a lost connection (ErrClosed),
			// which callers retry on another one.
			return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), cerr)
		}
		return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), err)
	}
	select {
	case f, ok := <-ch:
		if !ok {
			return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), m.Err())
		}
		if f.Type == TypeError {
			var e Error
			if err := Unmarshal(f.Payload, &e); err != nil {
				return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), err)
			}
			return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), &RemoteError{Errno: syscall.Errno(e.Errno), Message: e.Message})
		}
		return f, nil
	case <-ctx.Done():
		m.forget(id)
		return Frame{}, fmt.Errorf("wire: call %s: %w", req.Type(), context.Cause(ctx))
	}
}

// CallInto is Call for a request whose reply has one expected type: it
// checks the reply's type and decodes it into resp.
func (m *Mux) CallInto(ctx context.Context, req, resp Message) error {
	f, err := m.Call(ctx, req)
	if err != nil {
		return err
	}
	if f.Type != resp.Type() {
		return fmt.Errorf("wire: call %s: %w: reply is %s, want %s", req.Type(), ErrMessage, f.Type, resp.Type())
	}
	return Unmarshal(f.Payload, resp)
}

// Send sends a one-way message: no request id, no reply.
func (m *Mux) Send(msg Message) error {
	if err := m.c.W.Send(0, 0, msg); err != nil {
		m.writeFailed()
		return fmt.Errorf("wire: send %s: %w", msg.Type(), err)
	}
	return nil
}

// Refuse tells the peer why this side is ending the session (a master
// stepping down, say) and closes it.
func (m *Mux) Refuse(code RefuseCode, message string) error {
	err := m.c.W.Send(0, 0, &Refuse{Code: code, Message: message})
	m.fail(&RefusedError{Code: code, Message: message})
	<-m.done
	m.handlers.Wait()
	if err != nil {
		return fmt.Errorf("wire: refuse: %w", err)
	}
	return nil
}

// Close ends the session: waiting calls fail, handlers' contexts are
// cancelled, and Close returns once the reader and every handler have.
func (m *Mux) Close() error {
	m.fail(nil)
	<-m.done
	m.handlers.Wait()
	return nil
}

// Abort ends the session like Close, without waiting for the reader and
// the handlers: for a handler (Close would wait for itself) or a caller
// that holds a lock the handlers take. With a message, the peer is told
// why first (a Refuse with code).
func (m *Mux) Abort(code RefuseCode, message string) {
	if message == "" {
		m.fail(nil)
		return
	}
	_ = m.c.W.Send(0, 0, &Refuse{Code: code, Message: message})
	m.fail(&RefusedError{Code: code, Message: message})
}

// Done is closed when the connection has ended and nothing more will be
// read from it.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err says why the connection ended (a *ClosedError), or nil while it
// runs.
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		return nil
	}
	return m.err
}

// pending is the number of calls waiting for replies.
func (m *Mux) pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

func (m *Mux) forget(id uint64) {
	m.mu.Lock()
	delete(m.waiters, id)
	m.mu.Unlock()
}

// writeFailed ends the session if the writer is dead; a message that was
// merely too big leaves it running.
func (m *Mux) writeFailed() {
	if err := m.c.W.Err(); err != nil {
		m.fail(err)
	}
}

// fail ends the session once, with cause nil for a local Close.
func (m *Mux) fail(cause error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = &ClosedError{Peer: m.c.String(), Cause: cause}
	waiters := m.waiters
	m.waiters = nil
	m.mu.Unlock()

	m.cancel()
	for _, ch := range waiters {
		close(ch)
	}
	var re *RefusedError
	switch {
	case errors.Is(cause, ErrFrame) || errors.Is(cause, ErrMessage):
		// A peer that broke the protocol is told how, so its operator
		// reads the reason too.
		m.c.W.SetWriteTimeout(lingerTime)
		_ = m.c.W.Send(0, 0, &Refuse{Code: RefuseProtocol, Message: refusalText(cause)})
		m.linger()
	case errors.As(cause, &re) && !re.ByPeer:
		// Refuse sent it already.
		m.linger()
	default:
		// Nothing to say: close now, which also stops the reader.
		_ = m.c.NetConn.Close()
	}
}

// lingerTime bounds how long a refusing side waits for its peer to read
// the refusal and hang up.
const lingerTime = time.Second

// linger half-closes the connection after a Refuse and lets the reader
// drain what the peer still sends until it hangs up or lingerTime
// passes. Closing at once with unread bytes in the socket would make the
// kernel send a reset, which can destroy the Refuse before the peer
// reads it.
func (m *Mux) linger() {
	if cw, ok := m.c.NetConn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = m.c.NetConn.SetReadDeadline(time.Now().Add(lingerTime))
		return
	}
	_ = m.c.NetConn.Close()
}

// read is the one reader of the connection, and closes it at the end.
func (m *Mux) read() {
	defer close(m.done)
	defer func() {
		// Drain until the peer hangs up or the linger deadline (set by
		// fail when it refused), so that closing sends no reset.
		_, _ = io.Copy(io.Discard, m.c.NetConn)
		_ = m.c.NetConn.Close()
	}()
	for {
		f, err := m.c.R.ReadFrame()
		if err != nil {
			// After a local Close or Refuse the read error is only the
			// echo of it; fail keeps the first cause.
			m.fail(err)
			return
		}
		if m.Err() != nil {
			return
		}
		switch {
		case f.Type == TypeRefuse:
			var rf Refuse
			if err := Unmarshal(f.Payload, &rf); err != nil {
				m.fail(err)
			} else {
				m.fail(&RefusedError{Code: rf.Code, Message: rf.Message, ByPeer: true})
			}
			return
		case f.Flags&FlagReply != 0:
			if err := m.deliver(f); err != nil {
				m.fail(err)
				return
			}
		case m.inline != nil && m.handler != nil && m.inline(f.Type):
			m.respond(f)
		default:
			select {
			case m.sem <- struct{}{}:
			case <-m.ctx.Done():
				return
			}
			m.handlers.Add(1)
			go m.serve(f)
		}
	}
}

// deliver hands a reply to its call. A reply to a call that gave up is
// dropped; a reply to an id never used means the peer is broken.
func (m *Mux) deliver(f Frame) error {
	m.mu.Lock()
	ch, ok := m.waiters[f.ID]
	delete(m.waiters, f.ID)
	issued := m.nextID
	m.mu.Unlock()
	if ok {
		ch <- f // buffered: never blocks
		return nil
	}
	if f.ID == 0 || f.ID > issued {
		return fmt.Errorf("wire: %w: %s reply to request %d, which was never sent", ErrMessage, f.Type, f.ID)
	}
	return nil
}

// serve runs a request on a goroutine of its own (see respond).
func (m *Mux) serve(f Frame) {
	defer func() {
		<-m.sem
		m.handlers.Done()
	}()
	m.respond(f)
}

// respond runs the handler for one request and sends its reply.
func (m *Mux) respond(f Frame) {
	var reply Message
	var err error
	if m.handler == nil {
		err = fmt.Errorf("this %s serves no requests on this connection: %w", m.c.Local, syscall.ENOSYS)
	} else {
		reply, err = m.handler(m.ctx, f)
	}
	if f.ID == 0 {
		return
	}
	if err == nil && reply == nil {
		err = fmt.Errorf("handler for %s returned no reply: %w", f.Type, syscall.EIO)
	}
	if err != nil {
		reply = errorReply(err)
	}
	if err := m.c.W.Send(f.ID, FlagReply, reply); err != nil {
		if m.c.W.Err() != nil {
			m.fail(err)
			return
		}
		// The reply was refused (too big): the caller still gets an answer.
		_ = m.c.W.Send(f.ID, FlagReply, errorReply(fmt.Errorf("%w: %w", err, syscall.EIO)))
	}
}

// errorReply turns a handler's error into an Error message, keeping the
// errno it wraps (EIO when none).
func errorReply(err error) *Error {
	errno := syscall.EIO
	var e syscall.Errno
	if errors.As(err, &e) {
		errno = e
	}
	return &Error{Errno: uint32(errno), Message: err.Error()}
}

// Serve runs a Mux on c until the connection ends or ctx is done, then
// closes it. It returns nil when the peer hung up cleanly or ctx ended,
// else why the connection was lost.
func Serve(ctx context.Context, c *Conn, cfg MuxConfig) error {
	m := NewMux(c, cfg)
	select {
	case <-ctx.Done():
	case <-m.Done():
	}
	_ = m.Close()
	var ce *ClosedError
	if err := m.Err(); errors.As(err, &ce) && ce.Cause != nil && !errors.Is(ce.Cause, io.EOF) {
		return err
	}
	return nil
}
