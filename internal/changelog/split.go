package changelog

import "fmt"

// Flush and SyncData split Sync in two so that a master can hold its own
// lock (the one that orders Appends) only for the fast half: Flush under
// that lock, then SyncData outside it while further Appends fill the
// buffer. Entries appended before a Flush are durable once the SyncData
// that follows it returns nil. SyncData may run concurrently with Append,
// but not with Flush, Sync, Rotate or Close.

// Flush writes the buffered entries to the file without syncing it. When
// the file has reached Options.MaxSize it rotates first, which syncs the
// old file.
func (w *Writer) Flush() error {
	if w.opts.MaxSize > 0 && w.size >= w.opts.MaxSize {
		if err := w.rotate(); err != nil {
			return fmt.Errorf("rotate changelog %s: %w", w.Path(), err)
		}
	}
	if err := w.usable(); err != nil {
		return fmt.Errorf("flush changelog: %w", err)
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
		return fmt.Errorf("flush changelog: %w", err)
	}
	return nil
}

// SyncData fdatasyncs what Flush wrote. A failure is returned, not kept in
// the Writer, since SyncData does not hold the lock that guards it; the
// caller must stop acknowledging and reopen.
func (w *Writer) SyncData() error {
	if err := fdatasync(w.f); err != nil {
		return fmt.Errorf("sync changelog: %w", err)
	}
	return nil
}
