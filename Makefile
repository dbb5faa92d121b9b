# tricopy — build, test, demo and benchmarks. Every target installs what it needs first.
.PHONY: all deps build test test-unit demo bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@node scripts/build-native.mjs
	@npx tsc -p tsconfig.json

test: build
	@node scripts/run-tests.mjs $(TESTS)

test-unit: build
	@node scripts/run-tests.mjs unit

demo: build
	@scripts/demo.sh

bench: build
	@node dist/bench/main.js $(BENCH)

clean:
	rm -rf dist var
