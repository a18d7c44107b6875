# gcnats: everything runs through the go command; tools are pinned in go.mod.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PKGS     := ./...

.PHONY: build test chaos demo bench lint fuzz image clean

build: ## the gcnats binary, static
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o gcnats .

# A fresh chaos seed each run, printed first: go test shows a passing
# package's output only with -v, and a failure must name its seed.
CHAOS_SEED := $(or $(GCNATS_CHAOS_SEED),$(shell od -An -N8 -tu8 /dev/urandom | tr -d ' '))

test: lint ## lint, then every test with the race detector (a short chaos round included), then the Kubernetes manifests
	@echo "chaos round: GCNATS_CHAOS_SEED=$(CHAOS_SEED) GCNATS_CHAOS_DURATION=40s (replay: GCNATS_CHAOS_SEED=$(CHAOS_SEED) GCNATS_CHAOS_DURATION=40s make chaos)"
	GCNATS_CHAOS_SEED=$(CHAOS_SEED) $(GO) test -race -count=1 -timeout 20m $(PKGS)
	cd k8s && $(GO) test -count=1 ./...

chaos: ## a seeded, randomized fault schedule against every guarantee; GCNATS_CHAOS_SEED replays one, GCNATS_CHAOS_CLUSTER=1 runs it on a 3-node JetStream cluster
	GCNATS_CHAOS_SEED=$(CHAOS_SEED) GCNATS_CHAOS_DURATION=$${GCNATS_CHAOS_DURATION:-5m} \
	  $(GO) test -race -count=1 -timeout 0 -run '^TestChaos$$' -v .

# The demo runs the binary make build makes, with the same flags, so the
# two share one build (go run would compile the Genesys SDK again, with
# other flags) and Ctrl-C reaches gcnats itself, which ends with exit 0.
demo: ## JetStream, a simulated Genesys org and the sidecar, all embedded; DEMO_FLAGS passes flags (gcnats demo -h)
	@echo "make demo: building ./gcnats first, as make build does. The first build compiles the"
	@echo "Genesys SDK and takes a few minutes, more on a busy machine; later builds take seconds."
	@$(MAKE) --no-print-directory build
	./gcnats demo $(DEMO_FLAGS)

bench: ## the hot path's benchmarks, then the whole product's (bench_e2e_test.go), each beside its baseline; about 10 minutes
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./connector/ ./subjects/ ./publisher/
	$(GO) test -run '^$$' -bench '^Benchmark(Demux|HotPath)$$' -benchmem -count 3 .
	$(GO) test -run '^$$' -bench '^Benchmark(E2E|Process)' -benchtime 1x -count 3 -timeout 30m .

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	cd k8s && $(GO) vet ./...

fuzz: ## the peek against encoding/json, for a minute
	$(GO) test -run '^$$' -fuzz FuzzPeek -fuzztime 60s ./connector/

image: ## the container image
	docker build --build-arg VERSION=$(VERSION) -t gcnats:$(VERSION) .

clean:
	rm -f gcnats
