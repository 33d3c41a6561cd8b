package wire

import (
	"bytes"
	"testing"
)

// samples returns one value of every registered message type, with every
// field set to something other than its zero value, so a round trip
// that drops or swaps a field fails. TestSamplesCoverRegistry fails when
// a type is registered without a sample here.
func samples() []Message {
	n1 := [NonceSize]byte(bytes.Repeat([]byte{0xa5}, NonceSize))
	n2 := [NonceSize]byte(bytes.Repeat([]byte{0x5a}, NonceSize))
	mac := bytes.Repeat([]byte{0x3c}, NonceSize)
	return []Message{
		&Hello{MinVersion: 1, MaxVersion: 2, Role: RoleChunkserver, MetaID: 0x1122334455667788, Term: 7, Nonce: n1, Name: "cs1.example", Ext: []byte{9, 8}},
		&Challenge{Version: 2, Role: RoleMaster, MetaID: 0x1122334455667788, Term: 9, Nonce: n2, Name: "m1"},
		&Auth{MAC: mac},
		&Welcome{Version: 2, Role: RoleMaster, MetaID: 0x1122334455667788, Term: 9, Name: "m1", MAC: mac},
		&Refuse{Code: RefuseTerm, Message: "this master's term 5 is older than term 7"},
		&Ping{Data: []byte("ping \x00\xff")},
		&Pong{Data: []byte("pong \x00\xff")},
		&Error{Errno: 2, Message: "no such file"},
	}
}

func TestSamplesCoverRegistry(t *testing.T) {
	have := map[Type]bool{}
	for _, m := range samples() {
		if have[m.Type()] {
			t.Errorf("two samples of %s", m.Type())
		}
		have[m.Type()] = true
		if _, ok := Lookup(m.Type()); !ok {
			t.Errorf("sample of unregistered %s", m.Type())
		}
	}
	for _, mi := range Messages() {
		if !have[mi.Type] {
			t.Errorf("%s (%d) is registered but has no sample in samples_test.go", mi.Name, mi.Type)
		}
	}
}
