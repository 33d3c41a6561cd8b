package wire

import (
	"errors"
	"reflect"
	"testing"
)

// TestMessageRoundTrip encodes every sample, decodes it through the
// registry and compares, then checks the zero value too (empty strings
// and nil slices must survive as such).
func TestMessageRoundTrip(t *testing.T) {
	for _, m := range samples() {
		t.Run(m.Type().String(), func(t *testing.T) {
			f := Frame{Type: m.Type(), Payload: Marshal(m)}
			got, err := Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("decoded %+v\nwant    %+v", got, m)
			}
			mi, _ := Lookup(m.Type())
			zero := mi.New()
			if err := Unmarshal(Marshal(zero), got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, zero) {
				t.Fatalf("zero value decoded as %+v", got)
			}
		})
	}
}

// TestMessageTruncated cuts every sample at every byte: each prefix must
// be refused with ErrMessage, as must the full payload plus one byte.
func TestMessageTruncated(t *testing.T) {
	for _, m := range samples() {
		p := Marshal(m)
		for i := range len(p) {
			if _, err := Decode(Frame{Type: m.Type(), Payload: p[:i]}); !errors.Is(err, ErrMessage) {
				t.Errorf("%s cut to %d of %d bytes: error %v, want ErrMessage", m.Type(), i, len(p), err)
			}
		}
		if _, err := Decode(Frame{Type: m.Type(), Payload: append(p, 0)}); !errors.Is(err, ErrMessage) {
			t.Errorf("%s with a trailing byte: error %v, want ErrMessage", m.Type(), err)
		}
	}
}

func TestMACLength(t *testing.T) {
	for _, m := range []Message{&Auth{MAC: make([]byte, 31)}, &Welcome{MAC: make([]byte, 33)}} {
		if _, err := Decode(Frame{Type: m.Type(), Payload: Marshal(m)}); !errors.Is(err, ErrMessage) {
			t.Errorf("%s with a %d-byte MAC: error %v, want ErrMessage", m.Type(), NonceSize, err)
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	if _, err := Decode(Frame{Type: 999}); !errors.Is(err, ErrMessage) {
		t.Fatalf("error %v, want ErrMessage", err)
	}
}

func TestAllowed(t *testing.T) {
	cases := []struct {
		t           Type
		peer, local Role
		v           uint16
		want        bool
	}{
		{TypePing, RoleClient, RoleMaster, 1, true},
		{TypeError, RoleMaster, RoleChunkserver, 1, true},
		{TypeRefuse, RoleMaster, RoleClient, 1, true},
		{TypeHello, RoleClient, RoleMaster, 1, false}, // handshake only
		{TypeWelcome, RoleMaster, RoleClient, 1, false},
		{TypePing, RoleClient, RoleMaster, 0, false}, // before the type existed
		{999, RoleClient, RoleMaster, 1, false},
		{TypePing, Role(9), RoleMaster, 1, false},
	}
	for _, c := range cases {
		if got := Allowed(c.t, c.peer, c.local, c.v); got != c.want {
			t.Errorf("Allowed(%s, %s→%s, v%d) = %v", c.t, c.peer, c.local, c.v, got)
		}
	}
}

func TestRoleSetString(t *testing.T) {
	for s, want := range map[RoleSet]string{
		0:                            "no one",
		Roles(RoleClient):            "clients",
		Roles(RoleClient, RoleAdmin): "clients and admins",
		Roles(RoleClient, RoleChunkserver, RoleAdmin): "clients, chunkservers and admins",
	} {
		if got := s.String(); got != want {
			t.Errorf("%b: %q, want %q", s, got, want)
		}
	}
}

// TestSizers checks every Sizer against the encoding it predicts: a
// wrong Size would only cost speed, so nothing else would notice.
func TestSizers(t *testing.T) {
	for _, m := range samples() {
		if s, ok := m.(Sizer); ok && s.Size() != len(Marshal(m)) {
			t.Errorf("%s: Size %d, encoding has %d bytes", m.Type(), s.Size(), len(Marshal(m)))
		}
	}
}
