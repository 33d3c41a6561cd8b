#!/usr/bin/env bash
# bench/io.sh: carpfs and MooseFS 3.0.117 side by side on this machine, in
# one run, with the very same commands: the MooseFS anchor's bench-io.sh
# (anchors/moosefs: mdbench on 10,000 files with 1 and 4 threads; fio
# sequential write and cold read of 1 GiB in 1 MiB blocks; cold random
# 4 KiB reads, direct and buffered; dd copy), its targets interleaved run
# by run so the shared machine's drifts hit all alike.
#
# Targets:
#   mfs         MooseFS 3.0.117 (the anchor's up.sh: Debian packages, goal 2)
#   carpfs      carpfs as shipped: every metadata change fsynced before
#               it is acknowledged (COMMIT_MODE = sync)
#   carpfs_async  carpfs with COMMIT_MODE = async: acknowledged after the
#               local write, as MooseFS does (its changelog is not fsynced)
#   local       (with LOCAL=1) a plain directory on the same disk
#
# Prints the anchor's summary tables (median [min - max] per target and
# "target / MooseFS" ratios). Raw results in $OUT. Needs root.
# Knobs: RUNS (3), N, FIO_SIZE, RAND_SECS as bench-io.sh; ASYNC=0 drops
# the async target; KEEP=1 leaves the carpfs clusters up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
anchors=${ANCHORS:-$top/../shared/anchors/moosefs}
export BENCH_DIR=${BENCH_DIR:-/var/tmp/carpfs-bench}
OUT=${OUT:-$BENCH_DIR/results/io-$(date -u +%Y%m%dT%H%M%SZ)}
export RUNS=${RUNS:-3}
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || { echo "bench/io.sh: needs root (FUSE mounts, MooseFS)" >&2; exit 1; }

(cd "$top" && make -s build)
targets="mfs carpfs"
export DIR_carpfs COLD_carpfs DIR_carpfs_async COLD_carpfs_async
m=$(PORT_BASE=9620 COMMIT_MODE=sync "$here/carpfs.sh" up carpfs)
DIR_carpfs=$m/anchor-bench
COLD_carpfs="PORT_BASE=9620 '$here/carpfs.sh' cold carpfs"
if [ "${ASYNC:-1}" = 1 ]; then
	m=$(PORT_BASE=9640 COMMIT_MODE=async "$here/carpfs.sh" up carpfs_async)
	DIR_carpfs_async=$m/anchor-bench
	COLD_carpfs_async="PORT_BASE=9640 '$here/carpfs.sh' cold carpfs_async"
	targets="$targets carpfs_async"
fi
[ "${LOCAL:-0}" = 1 ] && targets="$targets local"
cleanup() {
	if [ "${KEEP:-0}" != 1 ]; then
		PORT_BASE=9620 "$here/carpfs.sh" down carpfs || true
		PORT_BASE=9640 "$here/carpfs.sh" down carpfs_async || true
	fi
}
trap cleanup EXIT

echo "== bench-io.sh: targets $targets, $RUNS runs; raw results in $OUT" >&2
TARGETS=$targets "$anchors/bench-io.sh" "${MFS_SCRATCH:-/tmp/mfs-anchor}" "${MFS_MOUNT:-/mnt/mfs}" "$OUT"
python3 "$anchors/summarize.py" "$OUT" | tee "$OUT/summary.md"
