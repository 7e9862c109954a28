# netstation — the two commands of the README quick start are `make demo`
# and `make test`. Everything else is a helper for them.
GO ?= go
BIN := bin/netstation

.PHONY: all build test demo bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/netstation

# Unit tests run anywhere; privileged tests skip without root unless
# NETSTATION_REQUIRE_PRIV=1 (CI), where a missing privilege fails them.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# Rootless when run by an ordinary user, with the host's namespaces as root.
demo: build
	./scripts/demo.sh $(BIN)

bench:
	./scripts/bench.sh

clean:
	rm -rf bin
