// Package metadump writes and reads metadata dumps: metadata.mfs on the
// master, metadata_ml.mfs on a metalogger. A dump is one meta.State at one
// version, framed as blocks of records with a running CRC-32C, so that a
// torn, truncated, spliced or bit-flipped file is refused instead of loaded
// as a different file system.
//
// # Byte layout (format 1)
//
// All integers are little-endian. The file is a header, zero or more
// blocks and a trailer, and nothing after it.
//
// Header, 52 bytes:
//
//	off len
//	  0   8  magic "CARPMETA"
//	  8   4  format version, 1
//	 12   4  flags, 0 (format 1 defines none; a reader refuses any set bit)
//	 16   8  metaid: the file system identity
//	 24   8  version of the last changelog entry the state includes
//	 32   8  term of that entry
//	 40   8  unix seconds when the dump was written (informational)
//	 48   4  CRC-32C of bytes 0..47
//
// Block:
//
//	off len
//	  0   4  payload length, 1..MaxBlockSize
//	  4   4  record count: records that begin in this block
//	  8   n  payload
//	8+n   4  running CRC-32C (see below)
//
// The payload is a sequence of records, each
//
//	kind u8 | length uvarint | length bytes
//
// where kind (never 0) and the record bytes are the meta.RecordKind and
// the bytes (*meta.State).Records emits; this package never looks inside
// them, meta.Builder does. A
// record's kind and length always lie in the block where it begins. Its
// bytes normally do too: the writer starts a new block rather than split a
// record that fits in one. Only a record longer than a block (a file of
// tens of terabytes has a chunk list past 1 MiB) continues into the
// following blocks: they open with its remaining bytes, a block that holds
// nothing else has record count 0, and the record is handed on only when its
// last byte has arrived and been checksummed. Records are never split
// anywhere else, so a reader can check that the bytes of a block add up to
// exactly its records.
//
// Trailer, 36 bytes:
//
//	off len
//	 0   4  0: the zero payload length that marks the end of the blocks
//	 4   4  0
//	 8   8  magic "ENDCARPM"
//	16   8  total records
//	24   8  total blocks
//	32   4  running CRC-32C
//
// # Checksums
//
// Every checksum is CRC-32C (Castagnoli), which the CPU computes at several
// GB/s. The header CRC covers bytes 0..47. Each later checksum is the
// running CRC-32C of every byte of the file before it, skipping the
// checksum fields themselves: it is crc32.Update seeded with the previous
// checksum, over the block's length, count and payload (or the trailer's
// first 32 bytes). A damaged byte is caught by the checksum of its own
// block, as with independent per-block checksums, and in addition blocks
// that were reordered, duplicated, dropped, or copied from another dump
// (whose header differs at least in the time) do not check out. A reader
// verifies a block's checksum before it passes any of the block's records
// on, so a corrupted record never reaches meta.Builder.
//
// A file that ends anywhere before the end of the trailer is truncated and
// refused; so is a file with bytes after the trailer. Length fields are
// bounded before anything is allocated from them: a block buffer never
// grows past MaxBlockSize, and a record that spans blocks grows only as
// checksummed bytes arrive.
//
// # Versioning
//
// The magic and the format version stay at offsets 0 and 8 in every
// format, so any carpfs can tell what it is looking at. A reader checks
// them before anything else and refuses a format newer than it knows with a
// *FormatError that names both versions and says to upgrade; a newer build
// keeps reading every older format. Any change to the layout above, or to
// the meaning of a record, bumps the format version and gets an UPGRADE.md
// entry. The flags field is for a later format to announce optional parts;
// format 1 readers refuse any set bit rather than guess.
//
// # Publishing and kept copies
//
// Write never modifies the dump it replaces. It encodes into name+".tmp"
// in the same directory (one Write call per block: the block buffer is the
// write buffer), fsyncs and closes it, then shifts the kept older copies
// name.back.1 → name.back.2 → … → name.back.N (N = Options.Keep, default
// 3, as MooseFS keeps metadata.mfs.back.N), hard-links the current dump to
// name.back.1, renames the temp file over name and fsyncs the directory.
// Because name.back.1 is a hard link made before the rename, name exists
// and holds a complete dump at every instant, whatever moment a crash
// hits; the worst a crash leaves is name.back.1 equal to name. Copies past
// N, left by a larger Keep earlier, are removed. On any error before the
// rename the temp file is removed and name is untouched.
//
// The caller serializes Write calls for one name and must not change the
// state while it is being encoded.
package metadump
