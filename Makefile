# clawd — see README.md. Everything here runs as root on Debian 12.
export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/clawd-dev/clawd/daemon.Version=$(VERSION)
BIN      := bin/clawd
# Packages whose tests need root, the kernel and containerd run one at a time:
# they start their own containerd and network namespaces.
TESTFLAGS ?= -count=1 -timeout 20m
FUZZTIME  ?= 30s

.PHONY: all build generate test unit e2e bench demo install uninstall fuzz deps clean vet

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/clawd

# Regenerates bpf/*_bpfel.{go,o} from bpf/clawd.c (needs Debian's clang).
generate:
	command -v clang >/dev/null || apt-get install -y clang llvm libbpf-dev linux-libc-dev
	$(GO) generate ./bpf/

deps:
	bash scripts/deps.sh

vet:
	$(GO) vet ./...

# The whole suite: unit tests, fuzz seeds, kernel and containerd integration.
# The real-client agent root (e2e/harness/agentroot.sh) is built, or found
# in /var/cache/clawd-e2e, before the suite's timeout starts.
test: deps build
	$(GO) vet ./...
	$(GO) run ./e2e/mkagentroot
	$(GO) test $(TESTFLAGS) -p 2 -timeout 30m ./...

unit:
	$(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v /e2e)

e2e: deps build
	$(GO) run ./e2e/mkagentroot
	$(GO) test $(TESTFLAGS) -timeout 30m -v ./e2e/...

fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

bench: deps build
	bash scripts/bench.sh

demo: deps build
	bash scripts/demo.sh

install: build
	bash scripts/install.sh

uninstall:
	bash scripts/install.sh --uninstall

clean:
	rm -rf bin
