package chunkio

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/carpfs/carpfs/internal/wire"
)

// TestBlame: what Blame writes, parseBlame reads back, and messages in
// another form blame nobody.
func TestBlame(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{fmt.Errorf("disk gone: %w", syscall.EIO), "disk gone: input/output error"},
		// A remote error's message is passed on without its errno text,
		// which the reply carries in its own field.
		{&wire.RemoteError{Errno: syscall.ENOSPC, Message: "full"}, "full"},
	} {
		b := Blame("10.0.0.7:9422", tc.err)
		addr, reason, ok := parseBlame(b.Error())
		if !ok || addr != "10.0.0.7:9422" || reason != tc.reason {
			t.Fatalf("parseBlame(%q) = %q, %q, %v", b.Error(), addr, reason, ok)
		}
		if !errors.Is(b, tc.err) {
			t.Fatalf("Blame does not wrap %v", tc.err)
		}
	}
	if !errors.Is(Blame("[::1]:9422", &wire.RemoteError{Errno: syscall.ENOSPC}), syscall.ENOSPC) {
		t.Fatal("the errno is lost")
	}
	for _, msg := range []string{
		"",
		"disk gone",
		"server  failed: x",           // no address
		"server a b failed: x",        // not one word
		"server 10.0.0.7:9422 failed", // no separator
		"chunkstore: server 10.0.0.7:9422 failed: x",
	} {
		if addr, _, ok := parseBlame(msg); ok {
			t.Errorf("parseBlame(%q) blamed %q", msg, addr)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []piece
	}{
		{0, nil},
		{1, []piece{{0, 1}}},
		{wire.CSMaxIO, []piece{{0, wire.CSMaxIO}}},
		{wire.CSMaxIO + 1, []piece{{0, wire.CSMaxIO}, {wire.CSMaxIO, wire.CSMaxIO + 1}}},
		{ChunkSize, nil}, // checked by count below
	} {
		got := split(tc.n)
		if tc.n == ChunkSize {
			if len(got) != ChunkSize/wire.CSMaxIO || got[len(got)-1].hi != ChunkSize {
				t.Fatalf("split(ChunkSize) = %v", got)
			}
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("split(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}
