# fnbuilder — see README.md. Tools are installed by hack/install.sh into
# $(FNB_TOOLS)/bin (default ~/.cache/fnbuilder/bin).
SHELL := /bin/bash
GO ?= go
# A count of runs, not a duration: Go 1.26's fuzz coordinator can fail a
# target that found nothing when a duration's deadline passes
# (golang/go#75804, fixed in Go 1.27); a count has no deadline.
FUZZTIME ?= 50000x
# The real faas-cli and of-watchdog the tests run (the module proxy serves
# neither); .ci/run sets them, and beside ../shared they are found here.
export FAAS_CLI ?= $(wildcard $(abspath $(CURDIR)/../shared/tools/faas-cli))
export OF_WATCHDOG ?= $(wildcard $(abspath $(CURDIR)/../shared/tools/of-watchdog))

.PHONY: test lint unit e2e fuzz install build

install:
	bash hack/install.sh

build:
	$(GO) build -o bin/fnb ./cmd/fnb

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# The whole suite, end-to-end tests included (they start their own
# registry, buildkitd, local stack and Kubernetes cluster), then each fuzz
# target briefly. hack/install.sh first installs what is missing, the
# cluster's Kubernetes, containerd, runc and CoreDNS included (e2e/cluster;
# ~14 min once on a fresh machine, a version check afterwards).
test: lint
	FNB_CLUSTER=1 bash hack/install.sh
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParseHeader -fuzztime=$(FUZZTIME) ./internal/signature/
	$(GO) test -run='^$$' -fuzz=FuzzIndex -fuzztime=$(FUZZTIME) ./internal/buildtar/
	$(GO) test -run='^$$' -fuzz=FuzzParseConfig -fuzztime=$(FUZZTIME) ./internal/buildtar/
	$(GO) test -run='^$$' -fuzz=FuzzParseEnvelope -fuzztime=$(FUZZTIME) ./internal/secrets/

# The local OpenFaaS stack (cmd/fnb-stack; see cmd/fnb-stack/README.md):
# `make up` installs what is missing and starts everything on loopback,
# `make demo` runs the main job on it, `make down` stops all it started.
# FNB_STACK_DIR chooses the state dir (default /var/lib/fnbuilder-stack).
.PHONY: up down demo
up:
	bash hack/install.sh
	$(GO) build -o bin/fnb-stack ./cmd/fnb-stack
	bin/fnb-stack up

demo: up
	bin/fnb-stack demo

down:
	$(GO) build -o bin/fnb-stack ./cmd/fnb-stack
	bin/fnb-stack down

# Benchmarks (bench/, docs/benchmarks.md): one run of each figure on this
# machine; prints one table and writes it, with the machine, to
# docs/benchmarks.md. The async row needs the local stack up (make up).
.PHONY: bench
bench:
	$(GO) test -c -tags bench -o bin/fnb-bench.test ./bench/
	cd bench && FNB_BENCH_OUT=$(CURDIR)/docs/benchmarks.md ../bin/fnb-bench.test -test.run '^TestReport$$' -test.timeout 90m

# A real single-node Kubernetes (internal/cluster, docs/cluster-notes.md):
# `make cluster` installs what is missing (FNB_CLUSTER=1: Kubernetes,
# containerd, runc, CoreDNS from their modules; ~14 min once) and brings it
# up; `make cluster-down` stops it and leaves nothing behind.
# FNB_CLUSTER_DIR chooses the state dir (default /var/lib/fnbuilder-cluster).
.PHONY: cluster cluster-down
cluster:
	FNB_CLUSTER=1 bash hack/install.sh
	$(GO) build -o bin/fnb-cluster ./cmd/fnb-cluster
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/fnb-pause ./cmd/fnb-pause
	bin/fnb-cluster up

cluster-down:
	$(GO) build -o bin/fnb-cluster ./cmd/fnb-cluster
	bin/fnb-cluster down
