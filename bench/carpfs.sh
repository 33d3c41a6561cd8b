#!/usr/bin/env bash
# bench/carpfs.sh up|down|cold NAME [FILE]: a carpfs cluster for benchmarks,
# shaped like the MooseFS anchor's (anchors/moosefs/up.sh): one master,
# three chunkservers, one mount, all on this host over 127.0.0.1, goal 2 on
# the root. The binaries come from bin/ (make build).
#
#   up NAME     start (or keep) cluster NAME in $BENCH_DIR/NAME, mounted at
#               $BENCH_DIR/NAME/mnt; prints the mount point
#   down NAME   unmount and stop it (its PIDs only), keeping its data
#   cold NAME   sync and evict every chunk file's pages, then remount the
#               client: what bench-io.sh's COLD_<target> runs
#
# Environment: BENCH_DIR (/var/tmp/carpfs-bench), PORT_BASE per NAME (e.g.
# 9620: master 9620/9621, chunkservers 9622-9624, metaloggers 9625),
# METALOGGERS (0: none; N: a quorum journal of N metaloggers, data in
# $BENCH_DIR/NAME/mlK), COMMIT_MODE (sync|async, or quorum|async with
# metaloggers; default sync, or quorum with metaloggers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
BIN=${BIN:-$top/bin}
BENCH_DIR=${BENCH_DIR:-/var/tmp/carpfs-bench}
cmd=${1:?usage: carpfs.sh up|down|cold NAME}
name=${2:?usage: carpfs.sh up|down|cold NAME}
S=$BENCH_DIR/$name
M=$S/mnt
PORT_BASE=${PORT_BASE:-9620}
CS_PORT=$PORT_BASE
CL_PORT=$((PORT_BASE + 1))
ML_PORT=$((PORT_BASE + 5))
METALOGGERS=${METALOGGERS:-0}
PIDS=$S/pids

msg() { echo "carpfs.sh $name: $*" >&2; }

mounted() { [ "$(stat -f -c %T "$M" 2>/dev/null)" = fuseblk ] || grep -q " $M fuse" /proc/mounts; }

# alive PID NAME: PID runs and is the binary NAME (never trust a stale pid file)
alive() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "$BIN/$2 "; }

pid_of() { [ -f "$PIDS" ] || return 0; awk -v n="$1" '$1 == n { p = $2 } END { print p }' "$PIDS"; }

start() { # NAME LOG ARGS...
	local n=$1 log=$2
	shift 2
	local p
	p=$(pid_of "$n")
	if [ -n "$p" ] && alive "$p" "${n%%[0-9]*}"; then return 0; fi
	nohup "$BIN/${n%%[0-9]*}" "$@" >>"$log" 2>&1 &
	echo "$n $!" >>"$PIDS"
}

wait_port() { # PORT
	for _ in $(seq 1 300); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	msg "nothing listens on 127.0.0.1:$1"
	exit 1
}

mount_client() {
	mkdir -p "$M"
	mounted && return 0
	start mfsmount "$S/log/mfsmount.log" "$M" -f -H 127.0.0.1 -P "$CL_PORT"
	for _ in $(seq 1 300); do
		mounted && return 0
		sleep 0.1
	done
	msg "the mount did not appear at $M; see $S/log/mfsmount.log"
	exit 1
}

stop() { # NAME
	local p
	p=$(pid_of "$1")
	[ -n "$p" ] && alive "$p" "${1%%[0-9]*}" || return 0
	kill -TERM "$p"
	for _ in $(seq 1 300); do
		alive "$p" "${1%%[0-9]*}" || return 0
		sleep 0.1
	done
	msg "$1 (pid $p) ignored SIGTERM for 30 s; killing it"
	kill -KILL "$p"
}

# following DIR: the metalogger in DIR has a link to the master
following() { "$BIN/mfsmetalogger" status -d "$1" 2>/dev/null | grep -q '"master":"'; }

unmount_client() {
	if mounted; then umount "$M" || umount -l "$M"; fi
	stop mfsmount
}

case $cmd in
up)
	mkdir -p "$S/log" "$S/master"
	printf '127.0.0.1 / rw,alldirs,maproot=0\n' >"$S/mfsexports.cfg"
	if [ "$METALOGGERS" -gt 0 ]; then
		printf 'COMMIT_MODE = %s\nMETALOGGERS = %d\nMATOML_LISTEN_HOST = 127.0.0.1\nMATOML_LISTEN_PORT = %d\n' \
			"${COMMIT_MODE:-quorum}" "$METALOGGERS" "$ML_PORT" >"$S/mfsmaster.cfg"
	else
		printf 'COMMIT_MODE = %s\n' "${COMMIT_MODE:-sync}" >"$S/mfsmaster.cfg"
	fi
	start mfsmaster "$S/log/mfsmaster.log" -c "$S/mfsmaster.cfg" --exports "$S/mfsexports.cfg" \
		-d "$S/master" --listen "127.0.0.1:$CL_PORT" --cs-listen "127.0.0.1:$CS_PORT"
	# the master serves clients only once a majority of its metaloggers
	# accepted its term: they start before it is waited for
	for i in $(seq 1 "$METALOGGERS"); do
		mkdir -p "$S/ml$i"
		start "mfsmetalogger$i" "$S/log/mfsmetalogger$i.log" -c "$S/ml$i/mfsmetalogger.cfg" -d "$S/ml$i" \
			--master "127.0.0.1:$ML_PORT"
	done
	wait_port "$CL_PORT"
	for i in $(seq 1 "$METALOGGERS"); do
		for _ in $(seq 1 100); do
			following "$S/ml$i" && break
			sleep 0.1
		done
		following "$S/ml$i" || msg "metalogger $i does not follow the master after 10 s; see $S/log/mfsmetalogger$i.log"
	done
	for i in 1 2 3; do
		mkdir -p "$S/cs$i/hdd"
		printf 'HDD_LEAVE_SPACE_DEFAULT = 1GiB\n' >"$S/cs$i/mfschunkserver.cfg"
		start "mfschunkserver$i" "$S/log/mfschunkserver$i.log" -c "$S/cs$i/mfschunkserver.cfg" -d "$S/cs$i" \
			--hdd "$S/cs$i/hdd" --master "127.0.0.1:$CS_PORT" --data-port "127.0.0.1:$((PORT_BASE + 1 + i))"
	done
	for i in 1 2 3; do wait_port $((PORT_BASE + 1 + i)); done
	# registration follows the data port by a moment
	for _ in $(seq 1 100); do
		[ "$(grep -c 'chunkserver registered' "$S/log/mfsmaster.log" 2>/dev/null)" -ge 3 ] && break
		sleep 0.1
	done
	mount_client
	"$BIN/mfscli" goal set 2 "$M" >/dev/null 2>&1 || msg "could not set goal 2 on the root (mfscli goal); the default applies"
	echo "$M"
	;;
down)
	unmount_client
	for i in 1 2 3; do stop "mfschunkserver$i"; done
	stop mfsmaster
	# the metaloggers last: until the master has stopped they may still be
	# sent entries it must not lose (whatever METALOGGERS says now: the
	# pid file knows how many were started)
	for n in $([ -f "$PIDS" ] && awk '$1 ~ /^mfsmetalogger[0-9]+$/ { print $1 }' "$PIDS" | sort -u); do stop "$n"; done
	rm -f "$PIDS"
	;;
cold)
	{ find "$S"/cs[0-9]*/hdd -type f -name 'chunk_*' -print0 | xargs -0 -r sync 2>/dev/null; } || true
	{ find "$S"/cs[0-9]*/hdd -type f -name 'chunk_*' -print0 |
		while IFS= read -r -d '' f; do dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || true; done; } || true
	unmount_client
	mount_client
	;;
*)
	echo "usage: carpfs.sh up|down|cold NAME" >&2
	exit 2
	;;
esac
