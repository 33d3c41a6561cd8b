// Package changelog stores metadata entries (meta.Entry) as text: one entry
// a line, checksummed, in files named and rotated as MooseFS names and
// rotates them. The master appends to it, metaloggers keep copies, and
// mfsmetarestore merges the copies to replay them onto a dump.
//
// # Line format
//
// Each entry is one line of printable ASCII ending in a newline:
//
//	VERSION|TERM|TIME|OPNAME(ARG,ARG,...)|RESULT|CRC\n
//
// for example
//
//	1042|3|1700000000|CREATE(1,notes%20today.txt,f,420,1000,1000,0)|17|9a0330ab
//
// The fields:
//
//   - VERSION, TERM and TIME are unsigned decimal with no sign and no
//     leading zero ("0" is zero). VERSION rises by 1 per entry, TERM is the
//     term of the master that wrote the entry, TIME the unix seconds the
//     master applied it at (a 32-bit value, as in meta.Entry).
//   - OPNAME is the operation's meta name (CREATE, RENAME, ...): A-Z, 0-9
//     and _. meta decides which arguments it has and in what order; the
//     codec only writes them (meta.ArgWriter) and reads them back
//     (meta.ArgReader).
//   - ARGs are separated by commas. A number is unsigned decimal as
//     above. A string is written byte for byte, except that every byte
//     outside 0x21..0x7e and each of % , ( ) | is written as %XX, two
//     uppercase hex digits. So any byte string, newlines, NUL, 0xff and
//     UTF-8 included, survives, and the line stays one line of printable
//     ASCII that grep and an editor handle. An empty string is nothing
//     between its separators; "()" holds either no argument or one empty
//     string, whichever the operation reads.
//   - RESULT is the operation's result values, comma separated ("17",
//     "5,3"), empty when it has none. Only successful operations are
//     logged (a failed one changes nothing), so there is no error field:
//     the encoder refuses an entry whose result is an error.
//   - CRC is the CRC-32C (Castagnoli) of every byte of the line before the
//     last '|', as 8 lowercase hex digits.
//
// Readers are strict: a line is accepted only if it is exactly what the
// encoder writes for the entry it decodes to. Leading zeros, lowercase or
// needless escapes, missing or extra arguments, numbers out of range and a
// missing newline are all refused, with the byte column of the problem.
// Canonical lines mean two copies of an entry are equal exactly when their
// bytes are, which is how the merge compares them, and that a fuzz test
// can check the codec with one property: every accepted line re-encodes to
// itself.
//
// A line is at most MaxLineSize bytes, which bounds what a reader buffers
// when it meets garbage.
//
// # Files and rotation
//
// The master appends to changelog.0.mfs in its data directory, a
// metalogger to changelog_ml.0.mfs; the prefix is a parameter. Rotating
// renames prefix.K.mfs to prefix.(K+1).mfs from the highest K down, so a
// crash part way leaves a hole in the numbering but never overwrites a
// file; files that would pass Options.Keep are deleted; then an empty
// prefix.0.mfs is created. The directory is fsynced after every create,
// rename and delete. Rotation happens on request or, with
// Options.MaxSize, at the first Sync after the file reaches that size, so
// a rotated file is durable and ends at a line boundary.
//
// Appends are buffered; Sync writes them and fdatasyncs the file. That is
// the group-commit point: a caller appends a batch, syncs once, and only
// then acknowledges the batch.
//
// AppendLine appends a line that arrives already encoded, as a master's
// lines reach a metalogger. It is parsed as strictly as a Reader parses
// and must continue the sequence as Append requires, so a copy never holds
// a line its readers would refuse; its bytes are then written as they
// came, which is the same as encoding the entry again since lines are
// canonical.
//
// # Torn and corrupt tails
//
// A crash during an append can leave the last line unfinished (no
// newline: torn) or, on file systems that extend a file before writing
// its data, followed by zeros or garbage. A Reader stops at the first
// line that is torn, fails to parse, fails its checksum, or does not
// continue the version sequence of its file by exactly 1, and returns a
// *CorruptError naming the file, line number and byte offset; it never
// yields that line or anything after it. Open cuts the current file back
// to the end of its last good line and fsyncs it before appending; when
// what it cuts is more than one torn line it first copies the cut bytes
// to prefix.0.mfs.cut.OFFSET, because a complete bad line followed by
// good ones is damage an operator should see rather than lose.
//
// # Following the files
//
// A Tail reads lines from a given version on across the current and
// rotated files, oldest to newest: a master feeds a metalogger that has
// fallen behind from its files that way, and a metalogger answers a fetch.
// A Writer in the same process may be appending and rotating meanwhile,
// so a Tail goes by versions, not file numbers. It opens every file from
// one listing and checks with a second listing that each name still names
// the file it opened, so that a rotation in between cannot hide a file;
// it keeps each file open until it has read it, so that a rotation
// renaming or deleting it does not matter; and at the end of a file it
// continues with the file that starts at the next version, listing the
// directory again if it has to. A file is complete once a newer one
// exists, because rotation syncs a file before renaming it and only then
// appends go elsewhere.
//
// The end of the current file is the end of the data, io.EOF, even inside
// a line still being written; a later Next looks again. A version older
// than the files hold is ErrTooOld, and the asker needs a dump. Versions
// missing between files and damage anywhere are errors: a Tail never
// skips what it cannot read, since its reader would then hold a log with a
// hole in it.
//
// # Cutting a divergent tail
//
// A metalogger may hold entries that a master logged but never committed
// before another master took over, whose history goes another way after
// the last committed version. TruncateAfter removes the entries after a
// version: it deletes the files that hold only later entries, newest
// first, cuts the file that holds the version right after its line, and
// renames that file to prefix.0.mfs if it was a rotated one, so that Open
// appends after the version. Each step is durable, by a file or directory
// fsync, before the next is taken, so a crash leaves files that hold one
// run of versions from the oldest on, ending at the version or later but
// never with a hole; running TruncateAfter again finishes the job. It
// needs the files to itself: no Writer or Tail may be open on the prefix.
//
// # Reading in parallel
//
// Parsing costs about as much as applying an entry, so a restore that
// parsed on one goroutine would leave a core idle. ParallelReader, which
// OpenSources uses, reads a file in line-aligned chunks of up to 1 MiB and
// parses them on worker goroutines; Next yields them in order and does
// the checks that depend on earlier lines itself, so it yields exactly the
// entries and errors a Reader would. The first 64 KiB is parsed by Next
// a line at a time, and the workers start only once the caller has taken
// a few entries: a small file starts no goroutine, and a merge over many
// files holds little for those still waiting their turn.
//
// # Merging copies
//
// A restore has several copies of the log: the master's files and each
// metalogger's, overlapping and each possibly ending early. Merger reads
// them all (one Source per file is simplest) and yields each version once,
// from a given version on. Rules:
//
//   - identical entries for a version from several sources are one entry;
//   - different entries for a version stop the merge with a
//     *ConflictError (errors.Is ErrConflict) naming the version and both
//     sources;
//   - a version that no source holds stops the merge with a *GapError
//     naming the missing range: more changelog files are needed;
//   - a source ending in a torn or corrupt line ends at its last good line
//     and the damage is reported in Warnings; if that leaves a version
//     missing, it is a gap like any other.
//
// Merger.Last tells how far the merge got, so a restore can report
// "reached version V term T" whether it finished or stopped.
package changelog
