package restore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/carpfs/carpfs/internal/changelog"
	"github.com/carpfs/carpfs/internal/meta"
	"github.com/carpfs/carpfs/internal/metadump"
)

// Dump is a dump file found in a data directory.
type Dump struct {
	Path   string
	Header metadump.Header
}

// Found is what a data directory holds for a restore.
type Found struct {
	Dumps      []Dump   // readable headers, newest first
	Changelogs []string // master's and metalogger's files, oldest first
	Skipped    []error  // dump files whose header could not be read
}

// ErrNoDump is returned when a directory holds no dump to start from.
var ErrNoDump = errors.New("no usable dump")

// isDumpName matches the master's and metalogger's dumps and their kept
// copies: metadata.mfs, metadata_ml.mfs, metadata.mfs.back.3, ...
func isDumpName(name string) bool {
	for _, base := range []string{"metadata.mfs", "metadata_ml.mfs"} {
		if name == base {
			return true
		}
		if rest, ok := strings.CutPrefix(name, base+".back."); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// Scan lists the dumps and changelogs in dir. Dumps of a file system other
// than metaid (when not 0) or than the newest dump's are an error: mixing
// two file systems' files is never what an operator wants.
func Scan(dir string, metaid uint64) (*Found, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	f := &Found{}
	for _, de := range des {
		if de.IsDir() || !isDumpName(de.Name()) {
			continue
		}
		p := filepath.Join(dir, de.Name())
		h, err := metadump.ReadHeader(p)
		if err != nil {
			f.Skipped = append(f.Skipped, err)
			continue
		}
		f.Dumps = append(f.Dumps, Dump{Path: p, Header: h})
	}
	slices.SortStableFunc(f.Dumps, func(a, b Dump) int {
		if c := cmp.Compare(b.Header.Version, a.Header.Version); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Header.Term, a.Header.Term); c != 0 {
			return c
		}
		return cmp.Compare(a.Path, b.Path)
	})
	for _, d := range f.Dumps {
		want := metaid
		if want == 0 {
			want = f.Dumps[0].Header.MetaID
		}
		if d.Header.MetaID != want {
			return nil, fmt.Errorf("scan %s: %s belongs to file system %016x but %s to %016x: %w",
				dir, d.Path, d.Header.MetaID, f.Dumps[0].Path, want, ErrMetaID)
		}
	}
	for _, prefix := range []string{changelog.PrefixMaster, changelog.PrefixMetalogger} {
		files, err := changelog.List(dir, prefix)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", dir, err)
		}
		for _, cf := range files {
			f.Changelogs = append(f.Changelogs, cf.Path)
		}
	}
	return f, nil
}

// Auto restores from the newest dump in dir that loads, plus every
// changelog there. A damaged newer dump is passed over with a warning; a
// gap or a conflict in the changelogs is not, since an older dump cannot
// bridge versions past its own.
func Auto(ctx context.Context, dir string, opts Options) (*Result, error) {
	f, err := Scan(dir, opts.MetaID)
	if err != nil {
		return nil, err
	}
	var warnings []error
	for _, e := range f.Skipped {
		opts.logger().Warn("dump passed over", "err", e)
		warnings = append(warnings, e)
	}
	for _, d := range f.Dumps {
		res, err := Run(ctx, d.Path, f.Changelogs, opts)
		if err == nil {
			res.Warnings = append(warnings, res.Warnings...)
			return res, nil
		}
		if !errors.Is(err, metadump.ErrCorrupt) && !errors.Is(err, meta.ErrBadSnapshot) {
			return nil, err
		}
		opts.logger().Warn("dump passed over", "dump", d.Path, "err", err)
		warnings = append(warnings, err)
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("restore %s: %w: %w", dir, ErrNoDump, errors.Join(warnings...))
	}
	return nil, fmt.Errorf("restore %s: %w (looked for metadata.mfs, metadata_ml.mfs and their .back.N copies)", dir, ErrNoDump)
}
