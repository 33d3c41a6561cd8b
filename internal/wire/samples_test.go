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
	hdr := ReqHeader{Session: 42, Seq: 1 << 33, UID: 1000, GID: 100}
	attr := Attr{Inode: 7, NodeType: 1, Mode: 0o644, UID: 1000, GID: 100, Atime: 1, Mtime: 2, Ctime: 3, Nlink: 1, Size: 1 << 33, Rdev: 4, Goal: 2}
	return []Message{
		&Hello{MinVersion: 1, MaxVersion: 2, Role: RoleChunkserver, MetaID: 0x1122334455667788, Term: 7, Nonce: n1, Name: "cs1.example", Ext: []byte{9, 8}},
		&Challenge{Version: 2, Role: RoleMaster, MetaID: 0x1122334455667788, Term: 9, Nonce: n2, Name: "m1"},
		&Auth{MAC: mac},
		&Welcome{Version: 2, Role: RoleMaster, MetaID: 0x1122334455667788, Term: 9, Name: "m1", MAC: mac},
		&Refuse{Code: RefuseTerm, Message: "this master's term 5 is older than term 7"},
		&Ping{Data: []byte("ping \x00\xff")},
		&Pong{Data: []byte("pong \x00\xff")},
		&Error{Errno: 2, Message: "no such file"},
		&SessionChallenge{},
		&SessionNonce{Nonce: n1},
		&SessionOpen{SessionID: 42, Path: "/home/a", Info: "host1:/mnt/mfs", Proof: mac},
		&SessionOpened{SessionID: 42, ReadOnly: true, Root: attr},
		&SessionEnd{SessionID: 42},
		&Ok{},
		&Entry{Attr: attr},
		&LookupName{ReqHeader: hdr, Parent: 1, Name: "file"},
		&GetAttr{ReqHeader: hdr, Inode: 7},
		&SetAttr{ReqHeader: hdr, Inode: 7, Mask: 0xff, Mode: 0o640, NewUID: 5, NewGID: 6, Atime: 100, Mtime: 200, Size: 1 << 40},
		&Create{ReqHeader: hdr, Parent: 1, Name: "new", NodeType: 6, Mode: 0o600, Rdev: 0x0801, Open: true},
		&Symlink{ReqHeader: hdr, Parent: 1, Name: "ln", Target: "../target"},
		&Link{ReqHeader: hdr, Inode: 7, Parent: 3, Name: "hard"},
		&Unlink{ReqHeader: hdr, Parent: 3, Name: "gone"},
		&Rmdir{ReqHeader: hdr, Parent: 3, Name: "dir"},
		&Rename{ReqHeader: hdr, SrcParent: 3, SrcName: "a", DstParent: 4, DstName: "b"},
		&ReadLink{ReqHeader: hdr, Inode: 9},
		&LinkTarget{Target: "../target"},
		&ReadDir{ReqHeader: hdr, Inode: 1, After: "m", Max: 500},
		&DirPage{Entries: []DirEntry{{Name: "a", Attr: attr}, {Name: "b", Attr: attr}}, More: true},
		&GetXattr{ReqHeader: hdr, Inode: 7, Name: "user.x"},
		&XattrValue{Value: []byte("v\x00\xff")},
		&ListXattr{ReqHeader: hdr, Inode: 7},
		&XattrNames{Names: []string{"user.a", "user.b"}},
		&SetXattr{ReqHeader: hdr, Inode: 7, Name: "user.x", Value: []byte("v"), Flags: 2},
		&RemoveXattr{ReqHeader: hdr, Inode: 7, Name: "user.x"},
		&StatFS{ReqHeader: hdr},
		&FSStats{TotalSpace: 1 << 50, AvailSpace: 1 << 49, Files: 1000, Dirs: 10},
		&Open{ReqHeader: hdr, Inode: 7, Flags: 0o1002},
		&Release{ReqHeader: hdr, Inode: 7},
		&SetGoal{ReqHeader: hdr, Inode: 7, Goal: 3},
		&GetGoal{ReqHeader: hdr, Inode: 7},
		&CSRegister{Addr: "10.0.0.5:9422", DataCenter: "dc1", Rack: "r7", Total: 1 << 42, Used: 1 << 40, Free: 3 << 40, ChunkCount: 1 << 20},
		&CSRegisterChunks{Chunks: []CSChunk{{ID: 1, Version: 2, Length: 65536, Damaged: true}, {ID: 1 << 40, Version: 9, Length: 1 << 26}}},
		&CSRegisterDone{},
		&CSHeartbeat{Total: 1 << 42, Used: 1 << 40, Free: 3 << 40, Chunks: 123456, Damaged: 3},
		&CSChunkDamaged{ID: 1 << 40, Version: 7},
		&CSChunkLost{ID: 1 << 41, Version: 8},
		&CSCreate{ID: 77, Version: 1},
		&CSDelete{ID: 78, Version: 3},
		&CSSetVersion{ID: 79, Old: 4, New: 5},
		&CSTruncate{ID: 80, Version: 6, Length: 1 << 20},
		&ChunkRead{ReqHeader: hdr, Inode: 7, Index: 3},
		&ChunkWrite{ReqHeader: hdr, Inode: 7, Index: 0},
		&ChunkInfo{Length: 3 << 26, ID: 81, Version: 2, Servers: []string{"10.0.0.5:9422", "10.0.0.6:9422"}},
		&ChunkWriteEnd{ReqHeader: hdr, Inode: 7, ID: 81, Length: 1 << 27, Bad: []string{"10.0.0.6:9422"}},
		&Lock{ReqHeader: hdr, Inode: 7, Owner: 1 << 50, Kind: LockPOSIX, LockType: LockWrite, Start: 10, End: 1<<64 - 1, PID: 4242},
		&GetLock{ReqHeader: hdr, Inode: 7, Owner: 9, LockType: LockRead, Start: 0, End: 99},
		&LockInfo{LockType: LockWrite, Start: 5, End: 50, PID: 17},
		&ReadDirNames{ReqHeader: hdr, Inode: 1, After: "b", Max: 100},
		&DirNames{Entries: []DirName{{Name: "c", Inode: 7, NodeType: 1}, {Name: "d", Inode: 8, NodeType: 2}}, More: true},
		&Changed{Attr: Attr{Inode: 9, NodeType: 1, Mode: 0o644, Nlink: 1}, Dirs: []Attr{{Inode: 1, NodeType: 2, Mode: 0o755, Nlink: 3, Size: 4}}},
		&CSReplicate{ID: 82, Version: 3, Sources: []string{"10.0.0.7:9422"}},
		&MLGrant{Term: 4, Holder: "m1/1700000000.123", Commit: 1041},
		&MLState{ID: "ml-3f2a", Term: 4, Holder: "m1/1700000000.123", First: 1, Last: 1042, LastTerm: 3, Committed: 1040, Replica: 1040},
		&MLTruncate{After: 1040},
		&MLAppend{Term: 4, Commit: 1041, Lines: []byte("1042|4|1700000000|TERM()||5d1f0c2e\n")},
		&MLAck{Version: 1042},
		&MLFetch{From: 1041, MaxBytes: 4 << 20},
		&MLDumpRead{Version: 1000, Offset: 1 << 20, Size: 1 << 20},
		&MLDumpData{Version: 1000, Total: 3 << 20, Data: []byte("dump bytes")},
		&MLLines{Lines: []byte("1041|3|1700000000|UNLOCK(81)||0e5c2a11\n")},
		&CSRead{ID: 83, Version: 4, Offset: 65536, Size: 1 << 20},
		&CSData{Data: []byte("chunk bytes")},
		&CSWrite{ID: 84, Version: 5, Offset: 4096, Data: []byte("new bytes"), Chain: []string{"10.0.0.6:9422"}},
		&CSSync{ID: 85, Version: 6, Chain: []string{"10.0.0.6:9422", "10.0.0.7:9422"}},
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
