// Package chunkstore keeps a chunkserver's chunks on its local disks: the
// disks listed in mfshdd.cfg, one file per chunk, every 64 KiB block
// checksummed so that a bad block is detected and never returned. It does
// no networking; mfschunkserver serves, registers and replicates on top of
// it.
//
// # Using it
//
//	disks, err := chunkstore.ParseHDDConfig(f, "/etc/mfs/mfshdd.cfg")
//	st, err := chunkstore.Open(disks, chunkstore.Options{Logger: log})
//	report := st.ScanReport()   // damaged and stale files found by Open
//	for _, c := range st.List() { /* register c with the master */ }
//	err = st.Create(id, 1)
//	err = st.WriteAt(id, 1, data, 0)
//	err = st.Sync(id)           // durable: data, header, name
//	n, err := st.ReadAt(id, 1, buf, off)
//	go st.Scrub(ctx, 10<<20, reportToMaster)
//
// Chunks are addressed by id and version; an operation naming another
// version than the stored one fails with ErrWrongVersion, a missing chunk
// with ErrNotFound, a bad block or header with ErrCorrupt, lack of room
// with ErrNoSpace (which wraps syscall.ENOSPC). Every method is safe for
// concurrent use; each chunk has its own lock, reads of one chunk share
// it.
//
// # mfshdd.cfg
//
// As in MooseFS 3.0, one disk a line:
//
//	[*|<|>|~]PATH [SPACE LIMIT]
//
// where:
//
//   - PATH is an absolute directory; it may contain blanks.
//   - '*' marks the disk for removal: its chunks are read and reported to
//     the master as marked for removal, so they are copied elsewhere;
//     nothing new goes there. Such a disk may be mounted read-only.
//   - '<' asks for the disk's chunks to move to the server's other disks
//     and '>' for chunks to move to it; this package only keeps new chunks
//     off '<' disks. '~' (ignore size changes) is accepted and has no
//     effect. Flags may be combined, each once, but not '<' with '>'.
//   - SPACE LIMIT, the last word if it reads as a number: "1.5TiB" caps
//     the bytes chunk files may take on the disk; "-5GiB" is the space to
//     leave free there, overriding Options.LeaveFree
//     (HDD_LEAVE_SPACE_DEFAULT); "0" means no limit. Units are MooseFS's
//     (ParseSize): k M G T P E powers of 1000, Ki Mi Gi Ti Pi Ei powers of
//     1024, an optional B.
//   - '#' at the start of a line, or after a blank, starts a comment (the
//     second form is a carpfs extension).
//
// A path listed twice, a relative path, a bad limit or a file without
// any disk is an error naming the file and line (ErrHDDConfig).
//
// # Disks
//
// Open takes an exclusive flock on DISK/.lock, so two chunkservers never
// share a disk (ErrLocked), and creates the 256 chunk directories. It
// warns when two disks are on one device. A disk whose free space
// (statfs, less root's reserve) is below its LeaveFree, or whose chunk
// files reached its size limit, is full: it takes no new chunks, and a
// write or truncate that would grow a chunk there fails with ErrNoSpace
// instead of running the file system dry. LeaveFree is a hard reserve,
// not only a placement hint as in MooseFS: a full disk under a running
// service is worse than a failed write the client retries elsewhere.
// Space figures are refreshed at most once a second, and growth granted
// in between is subtracted, so concurrent writers cannot overshoot.
// Growth is counted by file size, a conservative bound for sparse files.
//
// A new chunk goes to the disk with the largest share of its space free
// (free / total, with the limit as total when set), so disks of
// different sizes fill evenly; ties go to the disk with fewer chunks,
// then to the one listed first.
//
// # Chunk files (format 1)
//
// A chunk lives in
//
//	DISK/XX/chunk_<ID>_<VERSION>.mfs
//
// with ID 16 and VERSION 8 upper-case hex digits and XX the low byte of
// the id (00 to FF), the names MooseFS uses. The file is an 8 KiB header
// followed by the chunk's data: data byte i is at file offset 8192+i.
// All integers are little-endian.
//
//	off   len  field
//	   0     8  magic "CARPCHNK"
//	   8     4  format version, 1
//	  12     4  flags, 0 (a reader refuses any set bit)
//	  16     8  chunk id
//	  24     4  chunk version
//	  28     4  data length in bytes, 0 to 67108864
//	  32     4  header CRC-32C, over bytes 0-31 and 36-8191
//	  36    28  zero
//	  64  4096  1024 block CRC-32C values, one per 64 KiB block
//	4160  4032  zero
//
// Block i covers data bytes [i*65536, (i+1)*65536). Its CRC is that of
// the block as a reader sees it: the data, and zeros past the length.
// So the last, partial block's CRC is that of its bytes padded with zeros
// to 64 KiB, and a block wholly past the length has the CRC of 64 KiB of
// zeros, 0x72c0c4a4. A decoder refuses a header
// where that does not hold, or where any byte outside the fields is not
// zero, so a header it accepts re-encodes to the same bytes. Growing a
// chunk with Truncate changes no block CRC, and bytes past the length
// need not be on disk: the file is at least 8192 bytes and usually
// exactly 8192+length; a shorter file reads as zeros past its end (and
// fails its CRC if those bytes were not zeros), a longer one (a crash
// mid-write) has its tail cut before the chunk next grows.
//
// The version and the header CRC sit in the first 64 bytes, one disk
// sector, so a version change (SetVersion), which touches nothing else,
// is a single-sector write: atomic on real disks, the assumption
// PostgreSQL makes for its 512-byte pg_control. That is why the header
// CRC comes before the block CRCs rather than last.
//
// Format changes bump the format version; a reader refuses versions it
// does not know (and recognises MooseFS's "MFSC 1.0" chunk files, which
// share the names, to say so).
//
// # Reads, writes and crashes
//
// ReadAt reads every block it touches whole and verifies it before
// returning any byte: a 4 KiB read costs a 64 KiB read and checksum, as
// in MooseFS. WriteAt verifies the old contents of blocks it only partly
// covers before rechecksumming them. Block CRCs and the length are kept
// in memory while a chunk is open (at most Options.MaxOpenChunks files,
// least recently used closed first) and the header is written back
// after Options.HeaderFlushDelay, on Sync, SetVersion, eviction and
// Close; nothing is fsynced except by Sync and SetVersion. So a crash
// loses unsynced writes, and blocks written within the delay before a
// crash may fail their checksums afterwards: they are detected and
// reported (read, Scrub), never returned, and the master re-replicates
// the chunk, the same contract as MooseFS, which keeps CRCs in memory
// until a chunk is closed.
//
// SetVersion writes the header with the new version and fsyncs, then
// renames the file and fsyncs the directory. A crash leaves the old
// version under the old name, or the new version under either name;
// Open trusts the header and renames a file whose name lags it.
//
// # Open's scan
//
// Open reads every chunk file's header, one goroutine per disk and
// Options.ScanWorkers reads in flight on each. A header that cannot be
// trusted (bad magic, CRC, id not matching the name, short file) makes
// the chunk damaged: it stays in the index, under the version in its
// name, so List reports it (Damaged) and Delete removes it, but it cannot
// be read. When several files hold one chunk id (an interrupted move, a
// disk put back), one is kept by a fixed rule: a good header beats a bad
// one, then the higher version, then a name that matches the header,
// then the disk listed first, then the smaller path. The others are reported as stale (ScanReport.Stale) and
// PurgeStale deletes them. Files in chunk directories without a chunk
// name are logged and left alone.
//
// # Scrub
//
// Scrub reads every chunk at a bounded rate and reports damaged ones,
// which List then marks Damaged, so the master can re-replicate them
// before a client trips over the bad block.
package chunkstore
