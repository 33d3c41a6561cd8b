#!/usr/bin/env bash
# bench/meta.sh: the metadata core at scale, side by side with MooseFS.
#
#   carpfs: bench/metabench for each FILES_LIST size (default "1000000
#           10000000"): RAM per file, apply+log, dump write/load, replay.
#   MooseFS 3.0.117: anchors/moosefs/bench-master.sh with MOOSE_FILES
#           (default 1000000) files: master RSS per file and
#           `mfsmaster -a restore` replay rate on the same workload shape
#           (empty files, three changelog lines each).
#
# Prints both and the ratios. Results: $OUT (default /tmp/carpfs-bench/meta-DATE).
# SKIP_MOOSEFS=1 runs only carpfs. Needs root for MooseFS (it installs the
# Debian packages if missing) and about 4 GiB of disk per 10 M files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
anchors=${ANCHORS:-$top/../shared/anchors/moosefs}
OUT=${OUT:-/tmp/carpfs-bench/meta-$(date -u +%Y%m%dT%H%M%SZ)}
FILES_LIST=${FILES_LIST:-"1000000 10000000"}
MOOSE_FILES=${MOOSE_FILES:-1000000}
mkdir -p "$OUT"
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

(cd "$top" && go build -o bin/metabench ./bench/metabench)
for n in $FILES_LIST; do
	echo "== carpfs: $n files" >&2
	"$top/bin/metabench" -files "$n" -dir "$OUT/work-$n" -json >"$OUT/carpfs-$n.json"
	rm -rf "$OUT/work-$n"
done

if [ "${SKIP_MOOSEFS:-0}" != 1 ]; then
	echo "== MooseFS 3.0.117: $MOOSE_FILES files (anchors/moosefs/bench-master.sh)" >&2
	FILES=$MOOSE_FILES RESTORE_RUNS=${RESTORE_RUNS:-3} "$anchors/bench-master.sh" "$OUT/moosefs" >&2
fi

python3 - "$OUT" "$FILES_LIST" "$MOOSE_FILES" <<'PY'
import json, os, statistics, sys
out, sizes, mfiles = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
c = {int(n): json.loads(open(f"{out}/carpfs-{n}.json").read().strip().splitlines()[-1]) for n in sizes}
m = None
mj = os.path.join(out, "moosefs", "master.json")
if os.path.exists(mj):
    m = json.load(open(mj))
def row(name, ours, theirs, better_high=True, fmt="{:,.0f}"):
    ratio = ""
    if theirs:
        r = ours / theirs if better_high else theirs / ours
        ratio = f"{r:.2f}x"
    t = fmt.format(theirs) if theirs else "-"
    print(f"| {name} | {fmt.format(ours)} | {t} | {ratio} |")
for n in sorted(c):
    r = c[n]
    same = m is not None and n == mfiles
    print(f"\n### {n:,} files\n")
    print("| metric | carpfs | MooseFS 3.0.117 | carpfs advantage |")
    print("|---|---:|---:|---:|")
    row("master RAM per file, bytes (carpfs: Go heap; MooseFS: marginal RSS)", r["heap_bytes_per_file"],
        m["marginal_bytes_per_file"] if same else None, better_high=False)
    row("master RAM per file, bytes (RSS growth / files)", r["rss_bytes_per_file"],
        m["bytes_per_file"] if same else None, better_high=False)
    row("apply + log, entries/s", r["apply_and_log_entries_per_sec"], None)
    row("dump write, MB/s", r["dump_write_mb_per_sec"], None)
    row("dump write, s", r["dump_write_secs"], None, fmt="{:.2f}")
    row("dump load, s", r["dump_load_secs"], None, fmt="{:.2f}")
    row("changelog replay, entries/s", r["replay_entries_per_sec"], None)
    row("restore (load + replay + write), lines/s", r["restore_lines_per_sec"],
        statistics.median(m["replay_lines_per_sec"]) if same else None)
    row("restore wall time, s", r["restore_total_secs"],
        statistics.median(m["restore_secs"]) if same else None, better_high=False, fmt="{:.2f}")
PY
echo "raw results: $OUT" >&2
