package wire

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net"
)

// ClientHandshake runs the dialing side of the handshake on nc (see
// docs/PROTOCOL.md for the sequence). It returns the agreed session, or
// an error: a *RefusedError (errors.Is ErrRefused) when either side
// refused, whose message names what differs. On error the caller closes
// nc. The handshake is bounded by cfg.Timeout and by ctx.
func ClientHandshake(ctx context.Context, nc net.Conn, cfg ClientConfig) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := commonDefaults(cfg.MinVersion, cfg.MaxVersion, cfg.Timeout, cfg.MaxFrameSize, cfg.WriteTimeout)
	return run(ctx, nc, c, func() (*Conn, error) { return clientHandshake(nc, &cfg, c) })
}

// ServerHandshake runs the listening side of the handshake on nc. Like
// ClientHandshake it returns the session or an error saying why, and the
// caller closes nc on error. A *RefusedError with Code RefuseTerm means
// the peer has seen a newer master: a master that gets it is not the
// current master any more.
func ServerHandshake(ctx context.Context, nc net.Conn, cfg ServerConfig) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := commonDefaults(cfg.MinVersion, cfg.MaxVersion, cfg.Timeout, cfg.MaxFrameSize, cfg.WriteTimeout)
	return run(ctx, nc, c, func() (*Conn, error) { return serverHandshake(nc, &cfg, c) })
}

// run bounds a handshake by time and ctx, and prefixes its error.
func run(ctx context.Context, nc net.Conn, c common, hs func() (*Conn, error)) (*Conn, error) {
	op := "wire: handshake"
	if a := nc.RemoteAddr(); a != nil {
		op += " with " + a.String()
	}
	stop, err := armDeadline(ctx, nc, c.timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	conn, err := hs()
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		// A cancelled handshake fails with a timeout from the deadline
		// trick; say what really happened.
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, ErrRefused) && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return conn, nil
}

func clientHandshake(nc net.Conn, cfg *ClientConfig, c common) (*Conn, error) {
	r := NewFrameReader(nc, handshakeMaxFrame)
	w := NewFrameWriter(nc, handshakeMaxFrame)
	hello := &Hello{
		MinVersion: c.minV, MaxVersion: c.maxV,
		Role: cfg.Role, MetaID: cfg.MetaID, Term: cfg.Term,
		Nonce: nonce(), Name: cfg.Name,
	}
	if err := w.Send(0, 0, hello); err != nil {
		return nil, err
	}
	m, err := expect(r, TypeChallenge, TypeWelcome)
	if err != nil {
		return nil, refuseErr(w, err)
	}
	var ch *Challenge
	var proof []byte
	if x, ok := m.(*Challenge); ok {
		ch = x
		if err := cfg.checkServer(c, ch.Version, ch.Role, ch.MetaID, ch.Term, ch.Name); err != nil {
			return nil, refuseErr(w, err)
		}
		// With no secret the empty proof lets the server say "missing",
		// and its refusal comes back as this handshake's error.
		if len(cfg.AuthCode) > 0 {
			proof = clientMAC(cfg.AuthCode, hello, ch)
		}
		if err := w.Send(0, 0, &Auth{MAC: proof}); err != nil {
			return nil, err
		}
		if m, err = expect(r, TypeWelcome); err != nil {
			return nil, refuseErr(w, err)
		}
	}
	wl := m.(*Welcome)
	server := peerDesc(wl.Role, wl.Name, nil)
	switch {
	case ch == nil:
		if err := cfg.checkServer(c, wl.Version, wl.Role, wl.MetaID, wl.Term, wl.Name); err != nil {
			return nil, refuseErr(w, err)
		}
		if len(cfg.AuthCode) > 0 {
			return nil, refuse(w, RefuseAuthMissing,
				"this %s has an AUTH_CODE but %s did not ask for it: set the same AUTH_CODE on both", cfg.Role, server)
		}
	case wl.Version != ch.Version || wl.Role != ch.Role || wl.MetaID != ch.MetaID || wl.Term != ch.Term || wl.Name != ch.Name:
		return nil, refuse(w, RefuseProtocol, "%s's Welcome (%s, metaid %016x, term %d) differs from its Challenge (%s, metaid %016x, term %d)",
			server, versions(wl.Version, wl.Version), wl.MetaID, wl.Term, versions(ch.Version, ch.Version), ch.MetaID, ch.Term)
	case len(cfg.AuthCode) > 0 && !hmac.Equal(wl.MAC, serverMAC(cfg.AuthCode, hello, ch, proof)):
		return nil, refuse(w, RefuseAuthFailed,
			"%s did not prove the AUTH_CODE: its AUTH_CODE differs from this %s's", server, cfg.Role)
	}
	metaid := wl.MetaID
	if metaid == 0 {
		metaid = cfg.MetaID
	}
	return finish(nc, r, w, c, &Conn{
		Version: wl.Version, MetaID: metaid, Term: wl.Term,
		Local: cfg.Role, Peer: wl.Role, PeerName: wl.Name,
		Authenticated: ch != nil && len(cfg.AuthCode) > 0,
	}), nil
}

// checkServer is the client's check of what the server announced: the
// same rules the server applies, so that a server of another build, or
// an impostor, cannot talk a peer into a file system or term it must not
// accept.
func (cfg *ClientConfig) checkServer(c common, v uint16, role Role, metaid, term uint64, name string) error {
	server := peerDesc(role, name, nil)
	refused := func(code RefuseCode, format string, args ...any) error {
		return &RefusedError{Code: code, Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case v < c.minV || v > c.maxV:
		return refused(RefuseProtocol, "%s chose protocol %d, outside the %s this %s speaks", server, v, versions(c.minV, c.maxV), cfg.Role)
	case !role.valid():
		return refused(RefuseProtocol, "server claims role %d, unknown to this build", role)
	case cfg.PeerRole != 0 && role != cfg.PeerRole:
		return refused(RefuseRole, "this %s dialed a %s but reached %s", cfg.Role, cfg.PeerRole, server)
	case metaid != 0 && cfg.MetaID != 0 && metaid != cfg.MetaID:
		return refused(RefuseMetaID, "%s serves file system %016x, this %s belongs to %016x", server, metaid, cfg.Role, cfg.MetaID)
	case role == RoleMaster && term < cfg.Term:
		return refused(RefuseTerm, "%s's term %d is older than term %d seen by this %s: it is not the current master", server, term, cfg.Term, cfg.Role)
	}
	return nil
}

func serverHandshake(nc net.Conn, cfg *ServerConfig, c common) (*Conn, error) {
	r := NewFrameReader(nc, handshakeMaxFrame)
	w := NewFrameWriter(nc, handshakeMaxFrame)
	m, err := expect(r, TypeHello)
	if err != nil {
		return nil, refuseErr(w, err)
	}
	h := m.(*Hello)
	peer := peerDesc(h.Role, h.Name, nil)
	me := "this " + cfg.Role.String()
	serve := cfg.Serve
	if serve == 0 {
		serve = handshakeSenders
	}
	authRoles := cfg.AuthRoles
	if authRoles == 0 {
		authRoles = DefaultAuthRoles
	}

	// Versions first: a peer of another version may mean something else
	// by every later field.
	if h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
		return nil, refuse(w, RefuseProtocol, "%s offers the empty version range %d-%d", peer, h.MinVersion, h.MaxVersion)
	}
	lo, hi := max(h.MinVersion, c.minV), min(h.MaxVersion, c.maxV)
	if lo > hi {
		upgrade := cfg.Role.String()
		if h.MaxVersion < c.minV {
			upgrade = h.Role.String()
		}
		return nil, refuse(w, RefuseVersion, "%s speaks %s, %s speaks %s: upgrade the %s",
			peer, versions(h.MinVersion, h.MaxVersion), me, versions(c.minV, c.maxV), upgrade)
	}
	switch {
	case !h.Role.valid():
		return nil, refuse(w, RefuseRole, "peer %q has role %d, unknown to %s", h.Name, h.Role, me)
	case !serve.Has(h.Role):
		return nil, refuse(w, RefuseRole, "%s does not serve %ss here, only %s", me, h.Role, serve)
	case h.MetaID != 0 && cfg.MetaID != 0 && h.MetaID != cfg.MetaID:
		return nil, refuse(w, RefuseMetaID, "%s belongs to file system %016x, %s serves %016x", peer, h.MetaID, me, cfg.MetaID)
	case cfg.Role == RoleMaster && h.Term > cfg.Term:
		err := refuse(w, RefuseTerm, "%s's term %d is older than term %d seen by %s: it is not the current master",
			me, cfg.Term, h.Term, peer)
		err.(*RefusedError).PeerTerm = h.Term
		return nil, err
	}

	conn := &Conn{
		Version: hi, MetaID: cfg.MetaID, Term: cfg.Term,
		Local: cfg.Role, Peer: h.Role, PeerName: h.Name,
	}
	if conn.MetaID == 0 {
		conn.MetaID = h.MetaID
	}
	var proof []byte
	if len(cfg.AuthCode) > 0 && authRoles.Has(h.Role) {
		ch := &Challenge{Version: hi, Role: cfg.Role, MetaID: cfg.MetaID, Term: cfg.Term, Nonce: nonce(), Name: cfg.Name}
		if err := w.Send(0, 0, ch); err != nil {
			return nil, err
		}
		m, err := expect(r, TypeAuth)
		if err != nil {
			return nil, refuseErr(w, err)
		}
		a := m.(*Auth)
		if len(a.MAC) == 0 {
			return nil, refuse(w, RefuseAuthMissing, "%s requires an AUTH_CODE of %ss, and %s has none configured", me, h.Role, peer)
		}
		if !hmac.Equal(a.MAC, clientMAC(cfg.AuthCode, h, ch)) {
			return nil, refuse(w, RefuseAuthFailed, "wrong AUTH_CODE from %s", peer)
		}
		proof = serverMAC(cfg.AuthCode, h, ch, a.MAC)
		conn.Authenticated = true
	}
	wl := &Welcome{Version: hi, Role: cfg.Role, MetaID: cfg.MetaID, Term: cfg.Term, Name: cfg.Name, MAC: proof}
	if err := w.Send(0, 0, wl); err != nil {
		return nil, err
	}
	return finish(nc, r, w, c, conn), nil
}
