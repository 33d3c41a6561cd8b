# Builds every daemon and tool under its installed name, and runs the tests.
GO      ?= go
BIN     ?= bin
GOFLAGS ?=

# installed name : source directory
CMDS := mfsmaster:mfsmaster mfsmetarestore:metarestore mfschunkserver:chunkserver

.PHONY: build test check fuzz bench-meta clean

build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do \
		name=$${c%%:*}; dir=$${c##*:}; \
		echo "go build -o $(BIN)/$$name ./$$dir"; \
		$(GO) build $(GOFLAGS) -o $(BIN)/$$name ./$$dir || exit 1; \
	done

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

clean:
	rm -rf $(BIN)
