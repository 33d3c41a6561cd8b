#!/usr/bin/env bash
# bench/commit.sh: what a commit costs through the mount, carpfs with a
# quorum of metaloggers side by side with carpfs in async mode and with
# MooseFS 3.0.117 (which has a metalogger too), in one run.
#
# Workload (bench/commitbench): C concurrent clients, each in a directory
# of its own, create a file, write 4 KiB and close it (the close flushes
# the data to the chunkservers), N files in all; then every file is
# unlinked. Files/s for each phase, with C = 1, 4 and 16.
#
# Targets:
#   mfs            MooseFS 3.0.117, the anchor's cluster at /mnt/mfs
#                  (anchors/moosefs/up.sh: Debian packages, one
#                  metalogger, goal 2); its changelog is not fsynced
#   commit_quorum  carpfs, 3 metaloggers, COMMIT_MODE = quorum: each
#                  change acknowledged once 2 of 3 metaloggers fsynced it
#   commit_async   carpfs, 3 metaloggers, COMMIT_MODE = async: each change
#                  acknowledged after the master's local write, streamed
#                  to the metaloggers without waiting
#
# Targets run in turn for each C, run after run, so the shared machine's
# drifts hit them alike. Prints the medians over RUNS and the ratios
# quorum / async and quorum / MooseFS; everything (the table, commitbench's
# JSON lines, the metaloggers' status after each step, the daemons' log
# lines of this run) goes to $OUT. Needs root (FUSE mounts, MooseFS).
# Knobs: RUNS (1), N (2000), CLIENTS_LIST ("1 4 16"), SIZE (4096),
# KEEP=1 leaves the carpfs clusters up; MFS_SCRATCH, MFS_MOUNT as io.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
anchors=${ANCHORS:-$top/../shared/anchors/moosefs}
export BENCH_DIR=${BENCH_DIR:-/var/tmp/carpfs-bench}
OUT=${OUT:-$BENCH_DIR/results/commit-$(date -u +%Y%m%dT%H%M%SZ)}
RUNS=${RUNS:-1}
N=${N:-2000}
CLIENTS_LIST=${CLIENTS_LIST:-"1 4 16"}
SIZE=${SIZE:-4096}
MFS_SCRATCH=${MFS_SCRATCH:-/tmp/mfs-anchor}
MFS_MOUNT=${MFS_MOUNT:-/mnt/mfs}
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || { echo "bench/commit.sh: needs root (FUSE mounts, MooseFS)" >&2; exit 1; }

say() { echo "commit.sh: $*" >&2; }
t_start=$(date +%s)
mkdir -p "$OUT"
(cd "$top" && make -s build && go build -o bin/commitbench ./bench/commitbench) >&2

# The carpfs clusters: NAME PORT_BASE COMMIT_MODE. Their ports must not
# be taken by another cluster (carpfs.sh would keep its own running
# daemons, but cannot know someone else's).
clusters=("commit_quorum 9660 quorum" "commit_async 9680 async")
declare -A DIR
for c in "${clusters[@]}"; do
	read -r name base _ <<<"$c"
	if [ ! -s "$BENCH_DIR/$name/pids" ]; then
		for p in $(seq "$base" $((base + 5))); do
			if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
				say "port $p (PORT_BASE $base of $name) is taken by another process; stop it first (bench/carpfs.sh down NAME)"
				exit 1
			fi
		done
	fi
done
cleanup() {
	[ "${KEEP:-0}" = 1 ] && return 0
	for c in "${clusters[@]}"; do
		read -r name base _ <<<"$c"
		PORT_BASE=$base "$here/carpfs.sh" down "$name" || true
	done
}
trap cleanup EXIT
for c in "${clusters[@]}"; do
	read -r name base mode <<<"$c"
	say "starting $name (3 metaloggers, COMMIT_MODE = $mode, PORT_BASE $base)"
	DIR[$name]=$(METALOGGERS=3 PORT_BASE=$base COMMIT_MODE=$mode "$here/carpfs.sh" up "$name")/commit-bench
done

# The anchor: a mount whose daemon is gone answers "transport endpoint is
# not connected" and must be unmounted before up.sh mounts it again;
# up.sh (idempotent) also restarts any daemon that is missing.
case $(ls "$MFS_MOUNT" 2>&1 >/dev/null || true) in
*"not connected"*)
	say "$MFS_MOUNT: transport endpoint is not connected; remounting"
	"$anchors/down.sh" "$MFS_SCRATCH" "$MFS_MOUNT" --mount-only 2>>"$OUT/updown.log"
	;;
esac
"$anchors/up.sh" "$MFS_SCRATCH" "$MFS_MOUNT" 2>>"$OUT/updown.log" ||
	{ say "the MooseFS anchor did not come up; see $OUT/updown.log"; exit 1; }
DIR[mfs]=$MFS_MOUNT/commit-bench
targets="mfs commit_quorum commit_async"
for t in $targets; do mkdir -p "${DIR[$t]}"; done

# Where each daemon log stood, so that only this run's lines are kept.
declare -A LOGSTART
for f in "$BENCH_DIR"/commit_quorum/log/*.log "$BENCH_DIR"/commit_async/log/*.log "$MFS_SCRATCH"/log/*.log; do
	[ -f "$f" ] && LOGSTART[$f]=$(wc -l <"$f")
done

{
	echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "kernel: $(uname -r)"
	echo "cpu: $(nproc) x $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "moosefs: $(dpkg-query -W -f='${Version}' moosefs-master)"
	echo "carpfs: $(cd "$top" && git describe --always --dirty 2>/dev/null || echo unknown)"
	echo "runs: $RUNS n: $N clients: $CLIENTS_LIST size: $SIZE targets: $targets"
	echo "loadavg at start: $(cat /proc/loadavg)"
} >"$OUT/env.txt"
printf 'target\tclients\trun\tsecs\tcpu_busy_pct\tloadavg1\n' >"$OUT/steps.tsv"
cpu_sample() { awk '/^cpu / { idle = $5 + $6; tot = 0; for (i = 2; i <= 9; i++) tot += $i; print tot, idle }' /proc/stat; }

# mlstatus TARGET LABEL: each metalogger's status, one JSON line each;
# prints the largest lag.
mlstatus() {
	local i s lag max=0
	for i in 1 2 3; do
		s=$("$top/bin/mfsmetalogger" status -d "$BENCH_DIR/$1/ml$i" 2>&1) || true
		printf '{"label":"%s","metalogger":%d,"status":%s}\n' "$2" "$i" "${s:-null}" >>"$OUT/mlstatus.jsonl"
		lag=$(sed -n 's/.*"lag":\([0-9]*\).*/\1/p' <<<"$s")
		[ "${lag:-0}" -gt "$max" ] && max=$lag
	done
	echo "$max"
}

# settle TARGET: wait (60 s at most) until the chunkservers of a carpfs
# target stop deleting the chunks of the unlinked files, so that the next
# step does not share the CPU with them; prints the seconds waited.
# (MooseFS keeps unlinked files in its trash for 24 h: nothing to wait for.)
settle() {
	local prev=-1 now same=0 waited=0
	# the master starts deletions once a second: unchanged for 2 s is done
	while [ "$waited" -lt 60 ] && [ "$same" -lt 2 ]; do
		sleep 1
		waited=$((waited + 1))
		now=$(find "$BENCH_DIR/$1"/cs[0-9]*/hdd -type f -name 'chunk_*' 2>/dev/null | wc -l)
		if [ "$now" = "$prev" ]; then same=$((same + 1)); else same=0; fi
		prev=$now
	done
	echo "$waited"
}

# step TARGET CLIENTS RUN: one commitbench run, logged
step() {
	local t=$1 c=$2 r=$3 label="target=$1 clients=$2 run=$3" t0 t1 a b line lag=""
	read -r -a a < <(cpu_sample)
	t0=$(date +%s.%N)
	line=$("$top/bin/commitbench" -dir "${DIR[$t]}" -n "$N" -clients "$c" -size "$SIZE" -json -label "$label")
	t1=$(date +%s.%N)
	read -r -a b < <(cpu_sample)
	echo "$line" >>"$OUT/commitbench.jsonl"
	awk -v t="$t" -v c="$c" -v r="$r" -v t0="$t0" -v t1="$t1" -v la="$(cut -d' ' -f1 /proc/loadavg)" \
		-v at="${a[0]}" -v ai="${a[1]}" -v bt="${b[0]}" -v bi="${b[1]}" \
		'BEGIN { d = bt - at; busy = d > 0 ? 100 * (d - (bi - ai)) / d : 0; printf "%s\t%s\t%s\t%.3f\t%.1f\t%s\n", t, c, r, t1 - t0, busy, la }' >>"$OUT/steps.tsv"
	[ "$t" != mfs ] && lag=", metaloggers' largest lag $(mlstatus "$t" "$label") entries, chunk deletions settled in $(settle "$t") s"
	python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print(", ".join("%s %.0f/s" % (p["phase"], p["ops_per_sec"]) for p in r["phases"]), end="")' "$line" >&2
	echo "$lag" >&2
}

say "warm-up: $((N / 10)) files, 4 clients, on each target (not recorded)"
for t in $targets; do
	"$top/bin/commitbench" -dir "${DIR[$t]}" -n $((N / 10)) -clients 4 -size "$SIZE" -json -label "target=$t warmup" >>"$OUT/warmup.jsonl"
	[ "$t" != mfs ] && settle "$t" >/dev/null
done
for r in $(seq 1 "$RUNS"); do
	for c in $CLIENTS_LIST; do
		for t in $targets; do
			printf 'commit.sh: run %d/%d, %2d clients, %-13s ' "$r" "$RUNS" "$c" "$t" >&2
			step "$t" "$c" "$r"
		done
	done
done

# This run's daemon log lines, and how many say WARN or ERROR.
mkdir -p "$OUT/logs"
for f in "${!LOGSTART[@]}"; do
	d=$(basename "$(dirname "$(dirname "$f")")")
	tail -n +$((LOGSTART[$f] + 1)) "$f" >"$OUT/logs/$d.$(basename "$f")"
done
warn=$(cat "$OUT"/logs/* | grep -c -E 'level=(WARN|ERROR)' || true)
[ "$warn" -gt 0 ] && say "$warn warning or error lines in the daemons' logs of this run: grep -E 'level=(WARN|ERROR)' $OUT/logs/*"

python3 - "$OUT" "$CLIENTS_LIST" <<'PY' | tee "$OUT/summary.md"
import collections, json, statistics, sys
out, clients = sys.argv[1], [int(c) for c in sys.argv[2].split()]
ops = collections.defaultdict(list)  # (target, clients, phase) -> ops/s per run
for line in open(f"{out}/commitbench.jsonl"):
    r = json.loads(line)
    t = dict(kv.split("=", 1) for kv in r["label"].split())["target"]
    for p in r["phases"]:
        ops[(t, r["clients"], p["phase"])].append(p["ops_per_sec"])
def med(t, c, ph):
    v = ops.get((t, c, ph))
    return statistics.median(v) if v else None
def cell(t, c, ph):
    v = ops.get((t, c, ph))
    if not v:
        return "-"
    s = f"{statistics.median(v):,.0f}"
    return s + (f" [{min(v):,.0f} - {max(v):,.0f}]" if len(v) > 1 else "")
def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"
runs = max((len(v) for v in ops.values()), default=0)
print(f"\n### create + write 4 KiB + close, and unlink: files/s, median of {runs} run(s)\n")
print("| clients | phase | MooseFS 3.0.117 | carpfs quorum | carpfs async | quorum / async | quorum / MooseFS |")
print("|---:|---|---:|---:|---:|---:|---:|")
for ph in ("create_write", "unlink"):
    for c in clients:
        q, a, m = med("commit_quorum", c, ph), med("commit_async", c, ph), med("mfs", c, ph)
        print(f"| {c} | {ph} | {cell('mfs', c, ph)} | {cell('commit_quorum', c, ph)} | {cell('commit_async', c, ph)} | {ratio(q, a)} | {ratio(q, m)} |")
c = max(clients)
print(f"\nTargets at {c} clients (issue 4): quorum within 15 % of async, and at or above MooseFS.\n")
for ph in ("create_write", "unlink"):
    q, a, m = med("commit_quorum", c, ph), med("commit_async", c, ph), med("mfs", c, ph)
    if q and a and m:
        ok = lambda b: "met" if b else "missed"
        print(f"- {ph}: quorum / async {q / a:.2f} ({ok(q / a >= 0.85)}), quorum / MooseFS {q / m:.2f} ({ok(q >= m)})")
PY
say "took $(($(date +%s) - t_start)) s; results in $OUT"
