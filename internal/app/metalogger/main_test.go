package metalogger

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carpfs/carpfs/internal/metalogger"
)

// runMain runs mfsmetalogger with args and returns its exit code,
// stdout and stderr.
func runMain(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(ctx, append([]string{"mfsmetalogger"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func decodeStatus(t *testing.T, out string) metalogger.Status {
	t.Helper()
	var st metalogger.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("want one line of JSON, got %q (%v)", out, err)
	}
	return st
}

// TestFenceAndStatus: fence and status against a running daemon (over
// its admin socket) and on the files when none runs; an older term is
// refused with exit code 1 and the state printed.
func TestFenceAndStatus(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "none.cfg")
	if code, _, errs := runMain(context.Background(), "status", "-c", cfg, "-d", dir); code != 1 || !strings.Contains(errs, "holds no metalogger") {
		t.Fatalf("status of an empty directory: exit %d, %q", code, errs)
	}
	// A daemon whose master never answers: it runs all the same.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		code, _, _ := runMain(ctx, "-c", cfg, "-d", dir, "--master", addr)
		done <- code
	}()
	var st metalogger.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, _ := runMain(context.Background(), "status", "-c", cfg, "-d", dir)
		if code == 0 {
			if st = decodeStatus(t, out); st.Running {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never answered status: exit %d %q", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out, errs := runMain(context.Background(), "fence", "-c", cfg, "-d", dir, "--term", "5", "--holder", "m2")
	if code != 0 {
		t.Fatalf("fence: exit %d: %s", code, errs)
	}
	if st = decodeStatus(t, out); st.Term != 5 || st.Holder != "m2" || !st.Running {
		t.Fatalf("fence answered %+v", st)
	}
	code, out, errs = runMain(context.Background(), "fence", "-c", cfg, "-d", dir, "--term", "4", "--holder", "m1")
	if code != 1 || !strings.Contains(errs, "refused") {
		t.Fatalf("an older fence: exit %d, %q", code, errs)
	}
	if st = decodeStatus(t, out); st.Term != 5 {
		t.Fatalf("an older fence moved the term: %+v", st)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("daemon exit code %d", code)
	}
	// No daemon: the files answer.
	code, out, errs = runMain(context.Background(), "fence", "-c", cfg, "-d", dir, "--term", "6", "--holder", "m1")
	if code != 0 {
		t.Fatalf("offline fence: exit %d: %s", code, errs)
	}
	if st = decodeStatus(t, out); st.Term != 6 || st.Holder != "m1" || st.Running {
		t.Fatalf("offline fence answered %+v", st)
	}
	code, out, _ = runMain(context.Background(), "status", "-c", cfg, "-d", dir)
	if st = decodeStatus(t, out); code != 0 || st.Term != 6 {
		t.Fatalf("offline status: exit %d %+v", code, st)
	}
	if code, _, errs := runMain(context.Background(), "fence", "-c", cfg, "-d", dir); code != 1 || !strings.Contains(errs, "term") {
		t.Fatalf("fence without --term: exit %d %q", code, errs)
	}
}
