// Package fsutil holds the few file-system steps every on-disk format of
// carpfs shares.
package fsutil

import (
	"os"
	"path/filepath"
)

// SyncDir fsyncs a directory, making creates, renames and removes in it
// durable: without it a crash can lose a name whose file data was synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFileAtomic replaces dir/name with data so that a crash leaves
// either the old file or the new one, whole and durable: it writes a
// temporary file, fsyncs it, renames it over the old one and fsyncs the
// directory.
func WriteFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		if serr := f.Sync(); err == nil {
			err = serr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		return SyncDir(dir)
	}()
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
