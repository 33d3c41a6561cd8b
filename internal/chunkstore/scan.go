package chunkstore

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

// found is one chunk file as the scan saw it.
type found struct {
	d       *disk
	path    string
	id      uint64 // from the name; a good header agrees
	nameVer uint32
	hdr     *header // nil when the header cannot be trusted
	bad     error   // why not
	size    int64
	fi      os.FileInfo
}

// version is what the file claims: its header's, or its name's.
func (f *found) version() uint32 {
	if f.hdr != nil {
		return f.hdr.version
	}
	return f.nameVer
}

// parseChunkName reads "chunk_<16 hex>_<8 hex>.mfs", upper case.
func parseChunkName(name string) (id uint64, version uint32, ok bool) {
	if len(name) != len("chunk_0000000000000000_00000000.mfs") || name[:6] != "chunk_" || name[22] != '_' || name[31:] != ".mfs" {
		return 0, 0, false
	}
	for _, c := range name[6:22] + name[23:31] {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return 0, 0, false
		}
	}
	id, err1 := strconv.ParseUint(name[6:22], 16, 64)
	v, err2 := strconv.ParseUint(name[23:31], 16, 32)
	return id, uint32(v), err1 == nil && err2 == nil
}

// scan reads every disk, one goroutine per disk with ScanWorkers header
// reads in flight each, then settles duplicates and builds the index.
func (s *Store) scan() error {
	results := make([][]*found, len(s.disks))
	ignored := make([][]string, len(s.disks))
	errs := make([]error, len(s.disks))
	var wg sync.WaitGroup
	for i, d := range s.disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			results[i], ignored[i], errs[i] = s.scanDisk(d)
			s.log.Info("chunkstore: disk scanned", "disk", d.spec.Path, "files", len(results[i]), "elapsed", time.Since(start).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	byID := map[uint64][]*found{}
	for i := range results {
		for _, f := range results[i] {
			byID[f.id] = append(byID[f.id], f)
		}
		s.report.Ignored = append(s.report.Ignored, ignored[i]...)
	}
	ids := make([]uint64, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s.settle(byID[id])
	}
	s.report.Chunks = len(s.chunks)
	for _, p := range s.report.Ignored {
		s.log.Warn("chunkstore: file in a chunk directory is not a chunk file; ignored", "path", p)
	}
	return nil
}

// scanDisk lists a disk's 256 chunk directories and reads every chunk
// file's header. A directory that cannot be read fails the scan: serving
// with part of a disk unseen would report its chunks lost to the master.
func (s *Store) scanDisk(d *disk) ([]*found, []string, error) {
	type job struct {
		path    string
		id      uint64
		version uint32
	}
	jobs := make(chan job, 64)
	var mu sync.Mutex
	var out []*found
	var wg sync.WaitGroup
	for w := 0; w < s.opts.ScanWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				f := readFound(d, j.path, j.id, j.version)
				mu.Lock()
				out = append(out, f)
				mu.Unlock()
			}
		}()
	}
	var ignored []string
	var err error
	for b := 0; b < 256 && err == nil; b++ {
		dir := chunkDir(d.spec.Path, uint64(b))
		var ents []os.DirEntry
		ents, err = os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			err = nil // a disk marked for removal is not given directories
			continue
		}
		if err != nil {
			err = fmt.Errorf("scan %s: %w", d.spec.Path, err)
			break
		}
		for _, e := range ents {
			id, v, ok := parseChunkName(e.Name())
			if !ok || !e.Type().IsRegular() || id&0xff != uint64(b) {
				ignored = append(ignored, filepath.Join(dir, e.Name()))
				continue
			}
			jobs <- job{filepath.Join(dir, e.Name()), id, v}
		}
	}
	close(jobs)
	wg.Wait()
	slices.SortFunc(out, func(a, b *found) int { return cmp.Compare(a.path, b.path) })
	return out, ignored, err
}

// readFound reads and checks one chunk file's header.
func readFound(d *disk, path string, id uint64, v uint32) *found {
	f := &found{d: d, path: path, id: id, nameVer: v}
	fh, err := os.Open(path)
	if err != nil {
		f.bad = err
		d.ioError()
		return f
	}
	defer fh.Close()
	if f.fi, err = fh.Stat(); err != nil {
		f.bad = err
		return f
	}
	f.size = f.fi.Size()
	buf := headerPool.Get().(*[HeaderSize]byte)
	defer headerPool.Put(buf)
	n, err := fh.ReadAt(buf[:], 0)
	switch {
	case err == io.EOF || err == nil && n < HeaderSize:
		f.bad = fmt.Errorf("%w: file is %d bytes, shorter than a header", ErrBadHeader, f.size)
	case err != nil:
		d.ioError()
		f.bad = fmt.Errorf("read header: %w", err)
	default:
		f.hdr, f.bad = decodeHeader(buf[:])
		if f.bad == nil && f.hdr.id != id {
			f.bad = fmt.Errorf("%w: header is of chunk %016X", ErrBadHeader, f.hdr.id)
			f.hdr = nil
		}
	}
	return f
}

// settle picks which of the files found for one chunk id is the chunk,
// and reports the others as stale. The rule, deterministic whatever the
// order of the disks' listings: a file with a good header beats one
// without; then the higher version (the header's, else the name's); then
// a file whose name matches its header; then the disk listed first in
// mfshdd.cfg; then the smaller path.
func (s *Store) settle(fs []*found) {
	slices.SortFunc(fs, func(a, b *found) int {
		if (a.hdr == nil) != (b.hdr == nil) {
			if a.hdr != nil {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.version(), a.version()); c != 0 {
			return c
		}
		if ca, cb := a.nameVer == a.version(), b.nameVer == b.version(); ca != cb {
			if ca {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(a.d.idx, b.d.idx); c != 0 {
			return c
		}
		return cmp.Compare(a.path, b.path)
	})
	k := fs[0]
	for _, o := range fs[1:] {
		reason := fmt.Sprintf("chunk %016X version %d is kept in %s", k.id, k.version(), k.path)
		if k.fi != nil && o.fi != nil && os.SameFile(k.fi, o.fi) {
			reason = "another name (hard link) of " + k.path
		}
		s.report.Stale = append(s.report.Stale, StaleFile{Path: o.path, ID: o.id, Version: o.version(), Reason: reason})
		s.log.Warn("chunkstore: stale chunk file; delete it", "path", o.path, "reason", reason)
	}

	c := &chunk{id: k.id, disk: k.d, nameVer: k.nameVer, size: k.size}
	if k.hdr != nil {
		c.version, c.length = k.hdr.version, k.hdr.length
		c.tailDirty = k.size > HeaderSize+int64(k.hdr.length) // a crash mid-write
		if k.hdr.version != k.nameVer {
			s.fixName(c, k)
		}
	} else {
		c.version = k.nameVer
		c.hdrBad = k.bad.Error()
		s.report.Damaged = append(s.report.Damaged, BadChunk{ID: c.id, Version: c.version, Disk: k.d.spec.Path,
			Path: k.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, k.bad)})
	}
	s.chunks[c.id] = c
	k.d.chunks++
	k.d.chunkBytes += k.size
	if c.hdrBad != "" {
		s.markBad(c, -1, c.hdrBad)
	}
}

// fixName renames a file whose name lags its header: a crash between
// SetVersion's header write and its rename. The header wins. If the
// rename cannot be done, the chunk is served under its old name.
func (s *Store) fixName(c *chunk, k *found) {
	want := filepath.Join(filepath.Dir(k.path), chunkName(c.id, c.version))
	if k.d.readOnly {
		return
	}
	if _, err := os.Lstat(want); err == nil {
		return // the name is taken by a stale copy; PurgeStale frees it
	}
	if err := os.Rename(k.path, want); err != nil {
		s.log.Warn("chunkstore: cannot rename chunk file to match its header", "path", k.path, "err", err)
		return
	}
	c.nameVer = c.version
	c.dirUnsynced = true
	s.report.Renamed++
	s.log.Info("chunkstore: renamed chunk file to match its header (interrupted version change)", "from", k.path, "to", want)
}
