package meta

import (
	"slices"
	"strings"
	"sync"
)

// Listings in name order are what a client pages through (ReadDir and a
// name to start after). Sorting a directory for every page would make
// listing a big directory quadratic, so sorted listings are kept until
// the directory changes. Small directories are sorted each time, and the
// cache forgets everything past a bound, so it never holds more than a
// fraction of what the directories themselves hold.
const listingMaxEntries = 4 << 20 // entries kept over all directories

// listingMinEntries: smaller directories are not kept (a variable for
// the tests, which keep every listing).
var listingMinEntries = 256

// listings is the cache. Readers of the State fill it under the State's
// read lock, so it has its own lock; changes to a directory drop its
// listing under the State's write lock.
type listings struct {
	mu      sync.Mutex
	byDir   map[uint32][]DirEntry
	entries int
}

func (l *listings) get(dir uint32) ([]DirEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ents, ok := l.byDir[dir]
	return ents, ok
}

func (l *listings) put(dir uint32, ents []DirEntry) {
	if len(ents) < listingMinEntries {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries+len(ents) > listingMaxEntries {
		clear(l.byDir)
		l.entries = 0
	}
	if l.byDir == nil {
		l.byDir = map[uint32][]DirEntry{}
	}
	if old, ok := l.byDir[dir]; ok {
		l.entries -= len(old)
	}
	l.byDir[dir] = ents
	l.entries += len(ents)
}

// changed drops dir's listing: an entry was added, removed or replaced.
func (l *listings) changed(dir uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.byDir[dir]; ok {
		l.entries -= len(old)
		delete(l.byDir, dir)
	}
}

// sortedListing builds a directory's listing in name order.
func (s *State) sortedListing(entries map[string]uint32) []DirEntry {
	out := make([]DirEntry, 0, len(entries))
	for name, child := range entries {
		out = append(out, DirEntry{Name: name, Inode: child, Type: s.nodes.at(child).typ})
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}
