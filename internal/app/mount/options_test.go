package mount

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		spec, host string
		port       uint16
		sub        string
	}{
		{"mfsmaster", "mfsmaster", 0, "/"},
		{"mfsmaster:9421", "mfsmaster", 9421, "/"},
		{"mfsmaster:9421:/", "mfsmaster", 9421, "/"},
		{"mfsmaster:/data/x/", "mfsmaster", 0, "/data/x"},
		{"mfsmaster:9421:/data", "mfsmaster", 9421, "/data"},
		{"10.0.0.1:9500:/a/../b", "10.0.0.1", 9500, "/b"},
		{"[::1]:9421:/", "::1", 9421, "/"},
		{"[fe80::1]", "fe80::1", 0, "/"},
		{"m/sub", "m", 0, "/sub"},
	} {
		host, port, sub, err := parseSpec(c.spec)
		if err != nil || host != c.host || port != c.port || sub != c.sub {
			t.Errorf("%q: %q %d %q %v, want %q %d %q", c.spec, host, port, sub, err, c.host, c.port, c.sub)
		}
	}
	for _, bad := range []string{"", ":9421", "m:port", "m:9421:x", "[::1", "m:0", "m:70000:/"} {
		if _, _, _, err := parseSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func parse(t *testing.T, helper bool, args ...string) Settings {
	t.Helper()
	inv, err := parseArgs(args, helper, filepath.Join(t.TempDir(), "none.cfg"))
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return inv.Settings
}

func TestParseArgs(t *testing.T) {
	s := parse(t, false, "/mnt/mfs", "-H", "m1", "-P", "9500", "-S", "sub", "-f", "-o", "ro,mfstimeout=30,mfswritecachesize=64", "-onosuid")
	if s.Mountpoint != "/mnt/mfs" || s.Addr() != "m1:9500" || s.Subdir != "/sub" || !s.Foreground || !s.ReadOnly ||
		s.Timeout != 30*time.Second || s.WriteCache != 64<<20 || !slices.Equal(s.Extra, []string{"nosuid"}) {
		t.Fatalf("%+v", s)
	}
	// Options before the mount point; the later of -o and -H wins.
	s = parse(t, false, "-o", "mfsmaster=a,mfsport=1", "-H", "b", "-d", "/m")
	if s.Addr() != "b:1" || !s.Debug || !s.Foreground || s.Mountpoint != "/m" {
		t.Fatalf("%+v", s)
	}
	s = parse(t, false, "/m")
	if s.Foreground || s.Addr() != "mfsmaster:9421" || s.Subdir != "/" || s.AttrTTL != time.Second {
		t.Fatalf("defaults: %+v", s)
	}
	// mount(8)'s convention: SPEC DIR -o OPTS, -f meaning fake, fstab
	// options accepted.
	s = parse(t, true, "mfsmaster:9421:/data", "/mnt/mfs", "-o", "defaults,_netdev,noauto,rw,mfspassword=pw,x-systemd.automount")
	if s.Addr() != "mfsmaster:9421" || s.Subdir != "/data" || s.Mountpoint != "/mnt/mfs" || s.Password != "pw" || s.Fake {
		t.Fatalf("mount.mfs: %+v", s)
	}
	s = parse(t, true, "-sv", "m", "/mnt", "-f", "-o", "mfsport=9000")
	if !s.Fake || s.Addr() != "m:9000" {
		t.Fatalf("mount.mfs -f: %+v", s)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, c := range []struct {
		helper bool
		args   []string
		want   string
	}{
		{false, nil, "no mount point"},
		{false, []string{"/m", "-o", "bogus"}, `unknown mount option "bogus"`},
		{false, []string{"/m", "-o", "mfsport=x"}, "mfsport"},
		{false, []string{"/m", "-o", "mfsmaster"}, "needs a value"},
		{false, []string{"/m", "-o", "mfswritecachesize=1"}, "below 8 MiB"},
		{false, []string{"/m", "-o", "mfstimeout=0"}, "mfstimeout"},
		{false, []string{"/m", "/n"}, "more than one mount point"},
		{false, []string{"/m", "-x"}, "unknown flag -x"},
		{false, []string{"/m", "-H"}, "-H needs a value"},
		{false, []string{"/m", "-c", "/nonexistent/mfsmount.cfg"}, "configuration file"},
		{true, []string{"m"}, "SOURCE MOUNTPOINT"},
		{true, []string{":1", "/m"}, "no master host"},
		{true, []string{"m", "/m", "-N", "x"}, "namespaces"},
	} {
		_, err := parseArgs(c.args, c.helper, "/nonexistent/default.cfg")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

func TestConfigFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mfsmount.cfg")
	os.WriteFile(cfg, []byte("# a comment\nmfsmaster=cfghost, mfsport=9500\n\nmfssubfolder=/from/cfg # here\n/mnt/cfg\n"), 0o644)
	inv, err := parseArgs([]string{"-c", cfg, "-o", "mfsport=9600"}, false, "")
	if err != nil {
		t.Fatal(err)
	}
	s := inv.Settings
	if s.Addr() != "cfghost:9600" || s.Subdir != "/from/cfg" || s.Mountpoint != "/mnt/cfg" {
		t.Fatalf("%+v", s)
	}
	inv, err = parseArgs([]string{"-c", cfg, "/mnt/cmdline"}, false, "")
	if err != nil || inv.Settings.Mountpoint != "/mnt/cmdline" {
		t.Fatalf("command line mount point: %+v %v", inv.Settings, err)
	}
	os.WriteFile(cfg, []byte("mfsmaster=a\nmfsbogus=1\n"), 0o644)
	if _, err := parseArgs([]string{"-c", cfg, "/m"}, false, ""); err == nil || !strings.Contains(err.Error(), "mfsmount.cfg:2") {
		t.Fatalf("bad line: %v", err)
	}
}

// TestPackagedSample keeps the shipped mfsmount.cfg loadable.
func TestPackagedSample(t *testing.T) {
	inv, err := parseArgs([]string{"-c", "../../../packaging/etc/mfsmount.cfg", "/m"}, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := Defaults(); inv.Settings.Addr() != d.Addr() || inv.Settings.WriteCache != d.WriteCache {
		t.Fatalf("the sample sets %+v, not the defaults", inv.Settings)
	}
}
