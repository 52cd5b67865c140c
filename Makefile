# Thin wrapper around CMake so the README quick start is two commands.
#   make demo   - install deps, build, run `chunklock demo` on a temporary store
#   make test   - install deps, build, run the whole test suite (ctest)
#   make bench    - every figure of docs/benchmarks.md (bench/run): results in
#                 bench/results/<date>.json, tables and plots regenerated;
#                 BENCH_QUICK=1 for a pipeline check, BENCH_DIR=/disk/dir
#   make bench-gc - GC against the floor (docs/benchmarks.md); BENCH_DIR must be
#                 on a real disk filesystem, not tmpfs
#   make fuzz SECONDS=N  - libFuzzer targets, N s each (docs/fuzzing.md)
#   make model / make model-mutants - spin model check (docs/model.md)
#   make soak SECONDS=N  - randomized soak, release build (docs/hacking.md "Soak");
#                 SOAK_PROCS, SOAK_THREADS, SOAK_SEED; make soak-crash adds crashes
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
SECONDS ?= 60
FUZZ_BUILD ?= build-fuzz

.PHONY: all deps configure build demo test bench bench-gc asan tsan fuzz model model-mutants soak soak-crash install clean

all: build

deps:
	@scripts/install-deps

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	@if $(BUILD)/tools/chunklock demo --help >/dev/null 2>&1; then \
	  $(BUILD)/tools/chunklock demo; \
	else \
	  echo "chunklock demo is not built yet (issue 6); showing the version instead:"; \
	  $(BUILD)/tools/chunklock --version; \
	fi

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# bench/run reads BENCH_QUICK, BENCH_DIR and BENCH_BUILD from the environment.
bench:
	bench/run

BENCH_DIR ?= /var/tmp/ckl-bench
BENCH_SIZES ?= 100k,250k,500k,1M
BENCH_RUNS ?= 5
BENCH_DATE := $(shell date +%F)
bench-gc: build
	mkdir -p bench/results
	$(BUILD)/bench/gc_bench --sizes $(BENCH_SIZES) --runs $(BENCH_RUNS) --dir $(BENCH_DIR) \
	  --json bench/results/gc-$(BENCH_DATE).json --md bench/results/gc-$(BENCH_DATE).md
	@cat bench/results/gc-$(BENCH_DATE).md

# Sanitizer builds used by .ci/run.
asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCKL_SANITIZE=address -DCMAKE_C_COMPILER=clang
	cmake --build build-asan -j $(JOBS)
	ctest --test-dir build-asan --output-on-failure -j $(JOBS)

tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCKL_SANITIZE=thread -DCMAKE_C_COMPILER=clang
	cmake --build build-tsan -j $(JOBS)
	ctest --test-dir build-tsan --output-on-failure -j $(JOBS) -L threads

# Fuzzing (clang + libFuzzer): build the targets, fuzz each for SECONDS.
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
	  -DCKL_BUILD_FUZZ=ON -DCKL_BUILD_TESTS=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz-targets
	tests/fuzz/run.sh $(SECONDS) $(FUZZ_BUILD)

# Exhaustive model check of the GC / forget / backup / sweep protocol.
model: deps
	tests/model/check.sh

# The model with each safety mechanism removed: every mutant must fail.
model-mutants: deps
	tests/model/check.sh --mutants

# Randomized soak on the release build: SECONDS of every operation at once
# (docs/hacking.md "Soak"). SOAK_SEED reproduces a run's choices.
SOAK_PROCS ?= 4
SOAK_THREADS ?= 4
SOAK_SEED ?=
SOAK_FLAGS = --seconds $(SECONDS) --procs $(SOAK_PROCS) --threads $(SOAK_THREADS) \
  $(if $(SOAK_SEED),--seed $(SOAK_SEED)) $(if $(SOAK_JSON),--json $(SOAK_JSON))
soak: build
	cmake --build $(BUILD) -j $(JOBS) --target soak
	CKL_TEST_TMPDIR=$${CKL_TEST_TMPDIR:-/dev/shm} $(BUILD)/tests/soak $(SOAK_FLAGS)

soak-crash: build
	cmake --build $(BUILD) -j $(JOBS) --target soak
	CKL_TEST_TMPDIR=$${CKL_TEST_TMPDIR:-/dev/shm} $(BUILD)/tests/soak --crash $(SOAK_FLAGS)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-tsan $(FUZZ_BUILD)
