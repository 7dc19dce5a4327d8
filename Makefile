# slimkv: the two commands of the quick start, and the pieces they are made of.
#   make demo   install what the demo needs, build the slimkv binary alone, fetch the default
#               model, generate text (docs/BENCHMARKS.md "First run")
#   make test   install everything the tests need, build everything, then every test (release
#               build, sanitizer build, a fuzz run)
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_SECONDS ?= 60
# Tests run two at a time: most use both cores only part of the time (the float64 oracle is
# single-threaded Python for minutes), and make test must stay under 20 minutes.
TEST_JOBS ?= 2
# ccache, when installed, makes rebuilds across build directories and checkouts cheap.
CCACHE := $(shell command -v ccache 2>/dev/null)
LAUNCHER := $(if $(CCACHE),-DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE) -DCMAKE_C_COMPILER_LAUNCHER=$(CCACHE))
DEMO_PROMPT ?= Explain in three sentences why the KV cache of an LLM grows with the context length.

CONFIGURE = cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(LAUNCHER)

.PHONY: all setup setup-demo models build build-demo build-asan demo test test-release test-asan fuzz bench clean

all: build

# tools/setup.sh installs in two sets: `demo` (toolchain, the binary's libraries, the default
# model) and `test` (all of that, plus what the tests, benchmarks and sanitizers need).
setup:
	@tools/setup.sh test

setup-demo:
	@tools/setup.sh demo

models:
	@tools/setup.sh test --gemma3

# Everything: the binary, the tests, the benchmarks. A build directory the demo configured
# (tests and benchmarks off) is reconfigured with them on; its objects are kept.
build:
	@grep -qs '^SLIMKV_BUILD_TESTS:BOOL=ON' $(BUILD)/CMakeCache.txt && \
	  grep -qs '^SLIMKV_BUILD_BENCH:BOOL=ON' $(BUILD)/CMakeCache.txt || \
	  $(CONFIGURE) -DSLIMKV_BUILD_TESTS=ON -DSLIMKV_BUILD_BENCH=ON
	cmake --build $(BUILD) -j $(JOBS)

# The slimkv binary alone (what the demo runs); ninja prints one [n/N] line per file.
build-demo:
	@test -f $(BUILD)/build.ninja || $(CONFIGURE) -DSLIMKV_BUILD_TESTS=OFF -DSLIMKV_BUILD_BENCH=OFF
	cmake --build $(BUILD) -j $(JOBS) --target slimkv

build-asan:
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSLIMKV_SANITIZE=ON -DSLIMKV_BUILD_BENCH=OFF $(LAUNCHER)
	cmake --build $(ASAN_BUILD) -j $(JOBS)

demo:
	@tools/setup.sh demo
	@$(MAKE) --no-print-directory build-demo
	$(BUILD)/bin/slimkv run --chat -p "$(DEMO_PROMPT)" -n 160 --temp 0.7 --seed 42 --verbose

test-release: build
	cd $(BUILD) && ctest --output-on-failure -j $(TEST_JOBS)

test-asan: build-asan
	cd $(ASAN_BUILD) && SLIMKV_SANITIZED=1 ctest --output-on-failure -j $(TEST_JOBS) -LE slow

fuzz:
	tools/run_fuzz.sh $(FUZZ_SECONDS)

test: models
	$(MAKE) test-release
	$(MAKE) test-asan
	$(MAKE) fuzz

bench: setup build
	@echo "see bench/README.md for the benchmark commands"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
