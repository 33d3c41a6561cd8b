// Package fsutil holds the few file-system steps every on-disk format of
// carpfs shares.
package fsutil

import "os"

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
