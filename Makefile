# slimkv: the two commands of the quick start, and the pieces they are made of.
#   make demo   install what is missing, build, fetch the default model, generate text
#   make test   the same set-up, then every test (release build, sanitizer build, a fuzz run)
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

.PHONY: all setup models build build-asan demo test test-release test-asan fuzz bench clean

all: build

setup:
	@tools/setup.sh

models:
	@tools/setup.sh --gemma3

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(LAUNCHER)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

build-asan:
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSLIMKV_SANITIZE=ON -DSLIMKV_BUILD_BENCH=OFF $(LAUNCHER)
	cmake --build $(ASAN_BUILD) -j $(JOBS)

demo: setup build
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
