# Builds every daemon and tool under its installed name, and runs the tests.
GO      ?= go
BIN     ?= bin
GOFLAGS ?=

# installed name : source directory
CMDS := mfsmaster:mfsmaster mfsmetalogger:metalogger carpwatch:carpwatch mfsmetarestore:metarestore mfschunkserver:chunkserver \
	mfslocal:local mfscli:cli mfsmount:mount
# other names of a binary (argv[0]) : the binary
ALIASES := mfsgetgoal:mfscli mfssetgoal:mfscli mount.mfs:mfsmount

.PHONY: build test check fuzz bench-meta bench-io bench-commit clean local lab lab-down

build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do \
		name=$${c%%:*}; dir=$${c##*:}; \
		echo "go build -o $(BIN)/$$name ./$$dir"; \
		$(GO) build $(GOFLAGS) -o $(BIN)/$$name ./$$dir || exit 1; \
	done
	@for a in $(ALIASES); do ln -sfn $${a##*:} $(BIN)/$${a%%:*}; done

# The README's first command: a whole cluster on this host (master, three
# metaloggers, three chunkservers, a FUSE mount), until Ctrl-C or
# `bin/mfslocal down`.
# LOCAL_ARGS adds flags (e.g. LOCAL_ARGS='-d /srv/try --goal 3').
# FUSE comes from Debian's fuse3, installed here if missing and root.
LOCAL_ARGS ?=
local: build
	@if ! command -v fusermount3 >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing fuse3 (apt-get), which mfsmount needs"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fuse3 || exit 1; \
		else \
			echo "make local: FUSE is missing: install the fuse3 package (Debian: apt-get install fuse3, as root)"; exit 1; \
		fi; \
	fi
	$(BIN)/mfslocal up $(LOCAL_ARGS)

# The failover lab, as root (scripts/lab): two master hosts with ucarp and
# carpwatch, three hosts with a chunkserver, a metalogger and sshd, and a
# client with a mount on the VIP, each a network namespace; settings from
# LAB_* in the environment. `scripts/lab status` shows it, `make lab-down`
# removes it (KEEP=1 keeps its directory).
lab: build
	scripts/lab up

lab-down:
	scripts/lab down

# The README's test command: installs what the tests need, then runs them all.
check:
	scripts/install-test-deps.sh
	$(MAKE) test

test: build
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# Runs each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) ./internal/changelog
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/metadump
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeMessage$$' -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzParseHDDConfig$$' -fuzztime $(FUZZTIME) ./internal/chunkstore
	$(GO) test -run '^$$' -fuzz '^FuzzChunkHeader$$' -fuzztime $(FUZZTIME) ./internal/chunkstore
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzParseGoal$$' -fuzztime $(FUZZTIME) ./internal/replication
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/exports

# Metadata core speed and memory, side by side with MooseFS (see bench/README.md).
bench-meta: build
	bench/meta.sh

# The file system side by side with MooseFS 3.0.117 (see bench/README.md):
# mdbench, fio and dd through both mounts, as root. RUNS=1 for a quick pass.
bench-io: build
	bench/io.sh

# Create+write+close and unlink through the mount with 1, 4 and 16 clients:
# carpfs with 3 metaloggers in quorum and in async mode, and MooseFS 3.0.117
# (see bench/README.md), as root. RUNS (default 1) for medians.
bench-commit: build
	bench/commit.sh

clean:
	rm -rf $(BIN)
