# fnbuilder — see README.md. Tools are installed by hack/install.sh into
# $(FNB_TOOLS)/bin (default ~/.cache/fnbuilder/bin).
SHELL := /bin/bash
GO ?= go
FUZZTIME ?= 10s

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
# registry and buildkitd), then each fuzz target briefly.
test: lint
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParseHeader -fuzztime=$(FUZZTIME) ./internal/signature/
	$(GO) test -run='^$$' -fuzz=FuzzExtract -fuzztime=$(FUZZTIME) ./internal/buildtar/
	$(GO) test -run='^$$' -fuzz=FuzzParseConfig -fuzztime=$(FUZZTIME) ./internal/buildtar/
	$(GO) test -run='^$$' -fuzz=FuzzParseEnvelope -fuzztime=$(FUZZTIME) ./internal/secrets/
