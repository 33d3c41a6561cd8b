// Package meta is the carpfs namespace: inodes, directory entries, chunks
// with versions, goals, sessions and open files, held entirely in memory.
//
// It is a deterministic state machine. The only way to change a State is
// Apply(entry), which reads nothing but the state and the entry (its time
// included) and does no I/O, so the master, every metalogger replica and
// mfsmetarestore reach byte-identical states from the same dump and
// changelog. An operation either succeeds completely or fails with a POSIX
// errno and changes nothing, not even the version; only successes are
// logged, with their result, and Replay refuses an entry whose result
// differs from the recorded one.
//
// Operation arguments carry every decision the master made (names, modes,
// owners); what the state decides by itself (new inode numbers, chunk ids,
// session ids) is deterministic: inode numbers come from a FIFO of freed
// numbers once they have rested InodeReuseDelay seconds, otherwise from the
// end of the node table; chunk and session ids count up.
//
// Memory: one 40-byte node per inode in a single slice, directory entries in
// per-directory maps, chunk lists only for files that have chunks.
//
// Records and Builder turn a State into a stream of records and back; the
// Builder checks link counts, parents, reachability, chunk ownership and
// the free list before it hands out a State, so a damaged dump can never
// become a served file system.
package meta
