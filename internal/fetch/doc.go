// Package fetch is how carpwatch reaches metaloggers during a takeover
// (DESIGN §5 steps 3 and 4): it fences them over SSH and copies, over
// SFTP, exactly the changelog files and the dump the local restore needs.
//
// # Use
//
// In a takeover, carpwatch dials every metalogger, fences them (in
// parallel), takes the answers of a majority, and fetches from the one
// with the highest (LastTerm, Version):
//
//	c, err := fetch.Dial(ctx, host, 5*time.Second, fetch.WithLogger(log))
//	st, err := c.Fence(ctx, term, holder)
//	...
//	f, err := best.Fetch(ctx, fetch.Want{From: own.Version + 1, To: bestStatus.Version, MetaID: metaid},
//		fetch.Dir(dataPath, best.Host().Name))
//	dump := ownDumpPath
//	if f.Dump != nil {
//		dump = f.Dump.Path
//	}
//	res, err := restore.Run(ctx, dump, f.ChangelogPaths(), restore.Options{MetaID: metaid})
//
// The fetched changelogs alone bring the restore to To. The host's own
// changelog.N.mfs are not needed, and a tail of them that the majority
// never stored (from a time this host was the master) would stop the
// merge with a conflict.
//
// # Trust
//
// A takeover acts on what metaloggers answer, and a fake metalogger could
// make a master start from a forged history, so Dial checks host keys
// strictly against a known_hosts file: a host that is not there, or that
// offers another key than the file holds, is refused with a *HostKeyError
// that names the host, its address and the fingerprints on both sides.
// Nothing is run and nothing is copied then; there is no "accept new
// keys" mode. Only public-key authentication is used, from an unencrypted
// key file (carpwatch runs unattended).
//
// # Fencing
//
// Fence runs `mfsmetalogger fence -d DATA_PATH --term T --holder H` on the
// host and Status runs `mfsmetalogger status -d DATA_PATH`; both print one
// line of JSON, a metalogger.Status. The command works whether or not the
// daemon runs (it asks the daemon on its admin socket, or changes the
// state file under the daemon's lock). Every argument is single-quoted
// for the remote shell. A refused fence (the metalogger accepted a higher
// term, or the same term for another holder) still prints the state,
// which Fence returns together with an error matching ErrRefused; the
// refusal is read from that state, not from the exit code alone, so an
// I/O error on the remote side is not mistaken for one.
//
// # Choosing the files
//
// A metalogger's DATA_PATH holds changelog_ml.N.mfs (N=0 newest, higher N
// older, holes in N possible after a crash during rotation) and its newest
// dump metadata_ml.mfs. A metalogger's files hold one run of versions in
// the order of N, so file i holds the versions from its first one to the
// first one of the next newer file minus 1. Fetch lists the directory and
// reads first lines (a few KiB each), from the newest file back, only
// until a file starts at or before the first version needed: that picks
// exactly the files that hold From..To. It then reads the last lines of
// each picked file (64 KiB) to check that the run has no hole and reaches
// To, and refuses with ErrNotCovered, before copying anything, if not.
// The newest picked file is cut, once copied, after To's line: entries
// after To, or the torn line a crash left, are not handed to the restore,
// so that it ends exactly at To without a warning.
//
// The dump is fetched only when it is needed: when Want.NeedDump says the
// caller has none, or when From is older than the oldest entry the
// metalogger's changelogs still hold. Its header is read first (over
// SFTP), and the changelogs are picked from its version + 1 on. A dump
// newer than To, of another file system than Want.MetaID, or one that
// leaves versions between it and the changelogs, is refused before it is
// copied.
//
// # Where the files go
//
// Fetch writes into a directory of its own, one per metalogger: Dir gives
// DATA_PATH/fetched/NAME. The files keep the names they have on the
// metalogger (changelog_ml.N.mfs with the remote N, metadata_ml.mfs), so
// restore.Scan and mfsmetarestore read that directory as they read a
// metalogger's, and a file can be traced to its origin. Because the
// names are a metalogger's, Fetch refuses a directory that holds a
// metalogger's state or lock file or a master's dump or changelog: it
// must never overwrite live files of a process on the same host. Before
// copying it removes what an earlier fetch left there (the files of the
// names it writes and *.part temporaries), since files of another moment
// could hold a tail the merge would see as a conflict.
//
// Every file is copied to NAME.part, which no restore reads, through the
// handle its first line (or header) was read from, so a rotation that
// renames files meanwhile does not change what is copied. The remote
// file must keep the size and modification time it had when the copy
// began (an append or a truncation meanwhile is ErrChanged, and the
// caller may try again), and the copy must hold that many bytes; it is
// fsynced and renamed to NAME, and the directory is fsynced once all are
// in place.
//
// # Bounds
//
// Dial is bounded by its ctx and timeout; Fence and Status by their ctx
// and the same timeout; Fetch by its ctx alone, since a dump may take
// minutes. Each Fetch has an SFTP session of its own: cancelling it
// closes that session, which stops the calls under way; the SSH
// connection stays usable, the fetch's files are removed and the error
// matches ctx.Err(). Long copies report through Want.Progress.
package fetch
