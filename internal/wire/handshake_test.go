package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection on a port the
// kernel picks. TCP rather than net.Pipe because its buffering is what a
// real peer sees: a refusal written to a peer that is not reading yet
// must not block.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

type hsResult struct {
	conn *Conn
	err  error
}

// handshake runs both sides over a fresh connection.
func handshake(t *testing.T, cc ClientConfig, sc ServerConfig) (client, server hsResult) {
	t.Helper()
	cn, sn := tcpPair(t)
	done := make(chan hsResult, 1)
	go func() {
		c, err := ServerHandshake(context.Background(), sn, sc)
		done <- hsResult{c, err}
	}()
	c, err := ClientHandshake(context.Background(), cn, cc)
	return hsResult{c, err}, <-done
}

const (
	fsA = 0x00000000000000aa
	fsB = 0x00000000000000bb
)

var secret = []byte("correct horse battery staple")

func chunkserver() ClientConfig {
	return ClientConfig{Role: RoleChunkserver, Name: "cs1", MetaID: fsA, Term: 3, AuthCode: secret, PeerRole: RoleMaster}
}

func master() ServerConfig {
	return ServerConfig{Role: RoleMaster, Name: "m1", MetaID: fsA, Term: 5, AuthCode: secret}
}

// wantRefused checks that both sides failed with the same refusal: the
// server refusing, the client refused by it (or the other way round when
// clientRefuses), each error containing every fragment.
func wantRefused(t *testing.T, c, s hsResult, code RefuseCode, clientRefuses bool, fragments ...string) {
	t.Helper()
	for _, side := range []struct {
		name    string
		err     error
		refuses bool
	}{{"client", c.err, clientRefuses}, {"server", s.err, !clientRefuses}} {
		var re *RefusedError
		if !errors.As(side.err, &re) || !errors.Is(side.err, ErrRefused) {
			t.Errorf("%s: error %v, want a *RefusedError", side.name, side.err)
			continue
		}
		if re.Code != code || re.ByPeer == side.refuses {
			t.Errorf("%s: code %s byPeer %v, want code %s byPeer %v", side.name, re.Code, re.ByPeer, code, !side.refuses)
		}
		for _, f := range fragments {
			if !strings.Contains(side.err.Error(), f) {
				t.Errorf("%s: %q does not say %q", side.name, side.err, f)
			}
		}
	}
}

func TestHandshakeOK(t *testing.T) {
	c, s := handshake(t, chunkserver(), master())
	if c.err != nil || s.err != nil {
		t.Fatalf("client %v, server %v", c.err, s.err)
	}
	want := Conn{Version: ProtocolVersion, MetaID: fsA, Term: 5, Local: RoleChunkserver, Peer: RoleMaster, PeerName: "m1", Authenticated: true}
	got := *c.conn
	got.NetConn, got.R, got.W = nil, nil, nil
	if got != want {
		t.Errorf("client session %+v\nwant %+v", got, want)
	}
	want = Conn{Version: ProtocolVersion, MetaID: fsA, Term: 5, Local: RoleMaster, Peer: RoleChunkserver, PeerName: "cs1", Authenticated: true}
	got = *s.conn
	got.NetConn, got.R, got.W = nil, nil, nil
	if got != want {
		t.Errorf("server session %+v\nwant %+v", got, want)
	}
	if !strings.HasPrefix(s.conn.String(), `chunkserver "cs1" (127.0.0.1:`) {
		t.Errorf("peer described as %q", s.conn.String())
	}
}

// TestHandshakeNoAuth: a client role is not challenged by default, and a
// peer that knows no metaid yet learns it.
func TestHandshakeNoAuth(t *testing.T) {
	c, s := handshake(t, ClientConfig{Role: RoleClient, Name: "mnt"}, master())
	if c.err != nil || s.err != nil {
		t.Fatalf("client %v, server %v", c.err, s.err)
	}
	if c.conn.Authenticated || s.conn.Authenticated || c.conn.MetaID != fsA || s.conn.MetaID != fsA {
		t.Fatalf("client %+v server %+v", c.conn, s.conn)
	}
}

// TestHandshakeVersions plays older and newer builds against a server
// that speaks 1-2.
func TestHandshakeVersions(t *testing.T) {
	srv := master()
	srv.MinVersion, srv.MaxVersion = 1, 2
	for _, v := range []struct{ min, max, want uint16 }{{1, 1, 1}, {1, 2, 2}, {2, 3, 2}, {1, 9, 2}} {
		cl := chunkserver()
		cl.MinVersion, cl.MaxVersion = v.min, v.max
		c, s := handshake(t, cl, srv)
		if c.err != nil || s.err != nil {
			t.Fatalf("client %d-%d: %v / %v", v.min, v.max, c.err, s.err)
		}
		if c.conn.Version != v.want || s.conn.Version != v.want {
			t.Errorf("client %d-%d: sessions at %d and %d, want %d", v.min, v.max, c.conn.Version, s.conn.Version, v.want)
		}
	}

	cl := chunkserver()
	cl.MinVersion, cl.MaxVersion = 3, 3
	c, s := handshake(t, cl, srv)
	wantRefused(t, c, s, RefuseVersion, false, `chunkserver "cs1" speaks protocol 3, this master speaks protocols 1-2: upgrade the master`)

	srv.MinVersion, srv.MaxVersion = 2, 3
	cl.MinVersion, cl.MaxVersion = 1, 1
	c, s = handshake(t, cl, srv)
	wantRefused(t, c, s, RefuseVersion, false, `speaks protocol 1, this master speaks protocols 2-3: upgrade the chunkserver`)
}

func TestHandshakeMetaID(t *testing.T) {
	cl := chunkserver()
	cl.MetaID = fsB
	c, s := handshake(t, cl, master())
	wantRefused(t, c, s, RefuseMetaID, false, "file system 00000000000000bb", "serves 00000000000000aa")
}

func TestHandshakeAuth(t *testing.T) {
	t.Run("wrong", func(t *testing.T) {
		cl := chunkserver()
		cl.AuthCode = []byte("wrong")
		c, s := handshake(t, cl, master())
		wantRefused(t, c, s, RefuseAuthFailed, false, `wrong AUTH_CODE from chunkserver "cs1"`)
	})
	t.Run("missing", func(t *testing.T) {
		cl := chunkserver()
		cl.AuthCode = nil
		c, s := handshake(t, cl, master())
		wantRefused(t, c, s, RefuseAuthMissing, false, "this master requires an AUTH_CODE of chunkservers", "has none configured")
	})
	t.Run("metalogger", func(t *testing.T) {
		cl := chunkserver()
		cl.Role, cl.AuthCode = RoleMetalogger, nil
		c, s := handshake(t, cl, master())
		wantRefused(t, c, s, RefuseAuthMissing, false, "AUTH_CODE of metaloggers")
	})
	t.Run("client password", func(t *testing.T) {
		srv := master()
		srv.AuthRoles = Roles(RoleClient)
		c, s := handshake(t, ClientConfig{Role: RoleClient, AuthCode: []byte("nope")}, srv)
		wantRefused(t, c, s, RefuseAuthFailed, false, "wrong AUTH_CODE from client")
		c, s = handshake(t, ClientConfig{Role: RoleClient, AuthCode: secret}, srv)
		if c.err != nil || s.err != nil || !s.conn.Authenticated {
			t.Fatalf("%v / %v", c.err, s.err)
		}
	})
	// A chunkserver with a secret refuses a master that does not ask for
	// it: that master could be anyone.
	t.Run("server without secret", func(t *testing.T) {
		srv := master()
		srv.AuthCode = nil
		c, s := handshake(t, chunkserver(), srv)
		var re *RefusedError
		if !errors.As(c.err, &re) || re.Code != RefuseAuthMissing || re.ByPeer ||
			!strings.Contains(c.err.Error(), `this chunkserver has an AUTH_CODE but master "m1" did not ask for it`) {
			t.Fatalf("client: %v", c.err)
		}
		// The server thought it was done; the refusal is the first
		// thing its session reads.
		if s.err != nil {
			t.Fatal(s.err)
		}
		f, err := s.conn.R.ReadFrame()
		if err != nil || f.Type != TypeRefuse {
			t.Fatalf("server read %v, %v", f.Type, err)
		}
	})
}

func TestHandshakeTerm(t *testing.T) {
	cl := chunkserver()
	cl.Term = 7
	c, s := handshake(t, cl, master())
	wantRefused(t, c, s, RefuseTerm, false, `this master's term 5 is older than term 7 seen by chunkserver "cs1": it is not the current master`)

	// Equal terms are fine; so is a peer that has seen none.
	cl.Term = 5
	if c, s := handshake(t, cl, master()); c.err != nil || s.err != nil {
		t.Fatalf("%v / %v", c.err, s.err)
	}
	// A chunkserver serving a client does not check terms: it is not a master.
	srv := ServerConfig{Role: RoleChunkserver, MetaID: fsA, Term: 1}
	if c, s := handshake(t, ClientConfig{Role: RoleClient, Term: 9}, srv); c.err != nil || s.err != nil {
		t.Fatalf("%v / %v", c.err, s.err)
	}
}

func TestHandshakeRoles(t *testing.T) {
	srv := master()
	srv.Serve = Roles(RoleClient, RoleAdmin)
	c, s := handshake(t, chunkserver(), srv)
	wantRefused(t, c, s, RefuseRole, false, "this master does not serve chunkservers here, only clients and admins")

	// The chunkserver meant to reach a master and reached a chunkserver.
	cs := ServerConfig{Role: RoleChunkserver, Name: "cs2", AuthCode: secret}
	c, s = handshake(t, chunkserver(), cs)
	wantRefused(t, c, s, RefuseRole, true, `this chunkserver dialed a master but reached chunkserver "cs2"`)
}

// fakeServer answers a Hello with the given message, as a build with
// other rules (or an impostor) might, and returns what the client does.
func fakeServer(t *testing.T, cl ClientConfig, answer Message) (error, Frame) {
	t.Helper()
	cn, sn := tcpPair(t)
	got := make(chan Frame, 1)
	go func() {
		r, w := NewFrameReader(sn, 0), NewFrameWriter(sn, 0)
		if _, err := r.ReadFrame(); err != nil {
			got <- Frame{}
			return
		}
		_ = w.Send(0, 0, answer)
		f, _ := r.ReadFrame()
		got <- f
	}()
	_, err := ClientHandshake(context.Background(), cn, cl)
	return err, <-got
}

// TestHandshakeClientChecks: the client applies the server's rules
// itself, so a master of an old term cannot talk it into a session even
// if it does not refuse the client.
func TestHandshakeClientChecks(t *testing.T) {
	cl := chunkserver()
	cl.Term, cl.AuthCode = 7, nil
	cases := []struct {
		answer Message
		code   RefuseCode
		want   string
	}{
		{&Welcome{Version: 1, Role: RoleMaster, MetaID: fsA, Term: 5, Name: "old"},
			RefuseTerm, `master "old"'s term 5 is older than term 7 seen by this chunkserver: it is not the current master`},
		{&Challenge{Version: 1, Role: RoleMaster, MetaID: fsA, Term: 6},
			RefuseTerm, `master's term 6 is older than term 7`},
		{&Welcome{Version: 1, Role: RoleMaster, MetaID: fsB, Term: 9},
			RefuseMetaID, "master serves file system 00000000000000bb, this chunkserver belongs to 00000000000000aa"},
		{&Welcome{Version: 4, Role: RoleMaster, MetaID: fsA, Term: 9},
			RefuseProtocol, "master chose protocol 4, outside the protocols 1-2 this chunkserver speaks"},
		{&Welcome{Version: 1, Role: 0, Term: 9}, RefuseProtocol, "server claims role 0"},
		{&Ping{}, RefuseProtocol, "got Ping during the handshake"},
	}
	for _, c := range cases {
		err, f := fakeServer(t, cl, c.answer)
		var re *RefusedError
		if !errors.As(err, &re) || re.Code != c.code || re.ByPeer || !strings.Contains(err.Error(), c.want) {
			t.Errorf("answer %T: %v, want refusal %s saying %q", c.answer, err, c.code, c.want)
		}
		// The client tells the server why.
		if f.Type != TypeRefuse {
			t.Errorf("answer %T: server then read %s, want Refuse", c.answer, f.Type)
		}
	}
}

// TestHandshakeServerMAC: a server that answers the challenge with a
// wrong proof of its own is refused by a client with a secret.
func TestHandshakeServerMAC(t *testing.T) {
	cn, sn := tcpPair(t)
	go func() {
		r, w := NewFrameReader(sn, 0), NewFrameWriter(sn, 0)
		_, _ = r.ReadFrame()
		_ = w.Send(0, 0, &Challenge{Version: 1, Role: RoleMaster, MetaID: fsA, Term: 5})
		_, _ = r.ReadFrame()
		_ = w.Send(0, 0, &Welcome{Version: 1, Role: RoleMaster, MetaID: fsA, Term: 5, MAC: make([]byte, NonceSize)})
	}()
	_, err := ClientHandshake(context.Background(), cn, chunkserver())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "master did not prove the AUTH_CODE") {
		t.Fatalf("%v", err)
	}
}

// TestHandshakeDowngrade puts a man in the middle who lowers the
// client's offered versions in its Hello. Both sides hold the secret, so
// the server's check of the client's proof, which covers the Hello as
// the client sent it, fails.
func TestHandshakeDowngrade(t *testing.T) {
	cn, pc := tcpPair(t) // client <-> proxy
	ps, sn := tcpPair(t) // proxy <-> server
	go func() {
		r, w := NewFrameReader(pc, 0), NewFrameWriter(ps, 0)
		f, err := r.ReadFrame()
		if err != nil {
			return
		}
		var h Hello
		_ = Unmarshal(f.Payload, &h)
		h.MaxVersion = 1
		_ = w.Send(0, 0, &h)
		go copyFrames(ps, pc)
		copyFrames(pc, ps)
	}()
	srv := master()
	srv.MaxVersion = 2
	done := make(chan error, 1)
	go func() {
		_, err := ServerHandshake(context.Background(), sn, srv)
		done <- err
	}()
	cl := chunkserver()
	cl.MaxVersion = 2
	_, cerr := ClientHandshake(context.Background(), cn, cl)
	serr := <-done
	if !strings.Contains(fmt.Sprint(serr), "wrong AUTH_CODE") || !errors.Is(cerr, ErrRefused) {
		t.Fatalf("client %v, server %v", cerr, serr)
	}
}

func copyFrames(from, to net.Conn) {
	r, w := NewFrameReader(from, 0), NewFrameWriter(to, 0)
	for {
		f, err := r.ReadFrame()
		if err != nil || w.WriteFrame(f) != nil || w.Flush() != nil {
			to.Close()
			return
		}
	}
}

// TestHandshakeBadHello: input that is not a carpfs Hello is refused
// with a reason, not a hang or a panic.
func TestHandshakeBadHello(t *testing.T) {
	cases := []struct {
		name string
		send []byte
		want string
	}{
		// A MooseFS client's first packet: big-endian type 400, length 8.
		{"moosefs", []byte{0, 0, 1, 0x90, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}, "exceeds the limit of 65536"},
		{"ping first", AppendFrame(nil, Frame{Type: TypePing}), "got Ping during the handshake"},
		{"empty range", AppendFrame(nil, Frame{Type: TypeHello, Payload: Marshal(&Hello{MinVersion: 2, MaxVersion: 1, Role: RoleClient})}), "empty version range 2-1"},
		{"unknown role", AppendFrame(nil, Frame{Type: TypeHello, Payload: Marshal(&Hello{MinVersion: 1, MaxVersion: 1, Role: 9})}), "has role 9, unknown"},
		{"short hello", AppendFrame(nil, Frame{Type: TypeHello, Payload: []byte{1, 0}}), "malformed message"},
		{"request id", AppendFrame(nil, Frame{Type: TypeHello, ID: 3, Payload: Marshal(&Hello{MinVersion: 1, MaxVersion: 1, Role: 1})}), "request id 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cn, sn := tcpPair(t)
			if _, err := cn.Write(c.send); err != nil {
				t.Fatal(err)
			}
			cfg := master()
			cfg.Timeout = 5 * time.Second
			_, err := ServerHandshake(context.Background(), sn, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q", err, c.want)
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	_, sn := tcpPair(t)
	cfg := master()
	cfg.Timeout = 50 * time.Millisecond
	start := time.Now()
	_, err := ServerHandshake(context.Background(), sn, cfg)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}

func TestHandshakeCancel(t *testing.T) {
	_, sn := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := ServerHandshake(ctx, sn, master())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []ClientConfig{
		{},
		{Role: RoleClient, MinVersion: 3, MaxVersion: 2},
		{Role: RoleClient, Name: strings.Repeat("x", 256)},
		{Role: RoleClient, PeerRole: 77},
		{Role: RoleClient, MaxFrameSize: 100},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := (&ServerConfig{}).Validate(); err == nil {
		t.Error("server config without a role accepted")
	}
	if err := (&ClientConfig{Role: RoleAdmin}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestSessionFilter: after the handshake a session refuses handshake
// messages and types its peer's role may not send.
func TestSessionFilter(t *testing.T) {
	c, s := handshake(t, chunkserver(), master())
	if c.err != nil || s.err != nil {
		t.Fatalf("%v / %v", c.err, s.err)
	}
	if err := c.conn.W.Send(0, 0, &Ping{}); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.W.Send(0, 0, &Hello{}); err != nil {
		t.Fatal(err)
	}
	if f, err := s.conn.R.ReadFrame(); err != nil || f.Type != TypePing {
		t.Fatalf("%v %v", f.Type, err)
	}
	if _, err := s.conn.R.ReadFrame(); !errors.Is(err, ErrFrame) {
		t.Fatalf("Hello in session: %v", err)
	}
}

// TestHandshakeBadFrame: a damaged Hello is refused, and a carpfs peer
// is told why.
func TestHandshakeBadFrame(t *testing.T) {
	cn, sn := tcpPair(t)
	hello := AppendFrame(nil, Frame{Type: TypeHello, Payload: Marshal(&Hello{MinVersion: 1, MaxVersion: 1, Role: RoleClient})})
	hello[10] ^= 1
	if _, err := cn.Write(hello); err != nil {
		t.Fatal(err)
	}
	_, err := ServerHandshake(context.Background(), sn, master())
	if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "CRC-32C mismatch") {
		t.Fatalf("server: %v", err)
	}
	f, err := NewFrameReader(cn, 0).ReadFrame()
	var rf Refuse
	if err != nil || f.Type != TypeRefuse || Unmarshal(f.Payload, &rf) != nil || !strings.Contains(rf.Message, "received a bad frame at stream byte 0: CRC-32C mismatch") {
		t.Fatalf("client read %s %q, %v", f.Type, rf.Message, err)
	}
}
