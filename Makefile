# netstation — the two commands of the README quick start are `make demo`
# and `make test`. Everything else is a helper for them.
GO ?= go
BIN := bin/netstation

.PHONY: all build test test-race demo bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/netstation

# Unit tests run anywhere; privileged tests skip without root unless
# NETSTATION_REQUIRE_PRIV=1 (CI), where a missing privilege fails them.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# The race detector over the concurrent packages (the stack and its engine,
# TCP, links, gossip, the peripherals' runtime and kinds, the cpu, the
# internal helpers), in -short mode: `test` runs the long variants without
# it (internal/lint, which only reads the sources, runs there alone).
RACE_PKGS = ./stack/... ./peripherals/... ./cpu/... $(shell $(GO) list ./internal/... | grep -v /internal/lint)
test-race:
	$(GO) test -race -short -count=1 -timeout 15m $(RACE_PKGS)

# Rootless when run by an ordinary user, with the host's namespaces as root.
demo: build
	./scripts/demo.sh $(BIN)

bench:
	./scripts/bench.sh

# Every fuzz target for FUZZTIME each (default 10s); `test` runs their seeds.
fuzz:
	GO=$(GO) ./scripts/fuzz.sh

clean:
	rm -rf bin
