package wire

import (
	"bytes"
	"errors"
	"testing"
)

// TestListCountForged checks that a list count larger than the payload
// can hold is refused before anything is allocated for it.
func TestListCountForged(t *testing.T) {
	for _, m := range []Message{new(DirPage), new(XattrNames)} {
		p := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0}
		if err := Unmarshal(p, m); !errors.Is(err, ErrMessage) {
			t.Errorf("%s with a forged count: error %v, want ErrMessage", m.Type(), err)
		}
	}
}

// TestSessionProof checks that the proof depends on everything it covers.
func TestSessionProof(t *testing.T) {
	var n1, n2 [NonceSize]byte
	n2[0] = 1
	base := SessionProof("pw", n1, "/a", 0)
	if len(base) != NonceSize {
		t.Fatalf("proof of %d bytes", len(base))
	}
	for name, p := range map[string][]byte{
		"password": SessionProof("pw2", n1, "/a", 0),
		"nonce":    SessionProof("pw", n2, "/a", 0),
		"path":     SessionProof("pw", n1, "/b", 0),
		"session":  SessionProof("pw", n1, "/a", 1),
	} {
		if bytes.Equal(p, base) {
			t.Errorf("changing the %s leaves the proof unchanged", name)
		}
	}
	if !bytes.Equal(base, SessionProof("pw", n1, "/a", 0)) {
		t.Error("proof is not deterministic")
	}
}

// TestAttrSize pins attrSize, which bounds DirPage's entry count.
func TestAttrSize(t *testing.T) {
	var e Enc
	(&Attr{}).encode(&e)
	if len(e.Buf()) != attrSize {
		t.Fatalf("Attr encodes to %d bytes, attrSize is %d", len(e.Buf()), attrSize)
	}
}
