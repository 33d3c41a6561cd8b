package cliutil

import (
	"strings"
	"testing"
)

func TestHostPort(t *testing.T) {
	for _, c := range []struct {
		in, host string
		port     uint16
		err      string
	}{
		{"127.0.0.1:9421", "127.0.0.1", 9421, ""},
		{":0", "", 0, ""},
		{"[::1]:80", "::1", 80, ""},
		{"nope", "", 0, "missing port"},
		{"h:70000", "", 0, "bad port"},
		{"h:-1", "", 0, "bad port"},
	} {
		h, p, err := HostPort("--listen", c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "--listen") {
				t.Errorf("%q: got %v, want an error naming the flag and %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || h != c.host || p != c.port {
			t.Errorf("%q: got %q %d %v", c.in, h, p, err)
		}
	}
}
