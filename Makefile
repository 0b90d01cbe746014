# nsa -- build the examples, tools, tests and benchmarks.
#
#   make            build everything (gcc and clang, plus a C++ compile of the
#                   headers)
#   make test       build and run the whole test suite (the README's command)
#   make sanitize   the same suite under AddressSanitizer + UBSan
#   make mutants    the mutation check: each small bug of tests/mutants.txt
#                   must make the CPU suite fail
#   make cuda       compile and link all CUDA code with nvcc (no GPU needed)
#   make bench      build the CPU reference benchmark
#   make shared     build/libnsa.so, the reference as a shared library for
#                   the Python module (python/nsa.py); where nvcc exists
#                   also build/libnsa_cuda.so with the CUDA path
#   make vectors    write the curated golden-vector suite to build/vectors
#                   and check the reference against it
#   make pictures   redraw the selection pictures in docs/
#   make fuzz       fuzz the .npy reader, the JSON reader and the API's
#                   validator with libFuzzer (clang; FUZZ_TIME seconds each,
#                   default 60; seeds in tests/fuzz/corpus)
#
# VECTORS names the folder of independent test cases (default ../shared/vectors);
# a missing folder fails the tests unless NSA_SKIP_VECTORS=1.

CC      ?= gcc
CLANG   ?= clang
CXX     ?= g++
BUILD   ?= build
VECTORS ?= ../shared/vectors

WARN    = -std=c99 -Wall -Wextra -Werror -pedantic
# fp-contract=off: the reference's documented summation order has no fused
# multiply-adds, so every compiler gives the same bits. nsa_ref.h turns
# contraction off for its own code (digest_contract checks it); this flag
# keeps the tests' own arithmetic (the oracle) uncontracted too.
NUMERIC = -ffp-contract=off
CFLAGS  ?= -O2
OMP     ?= -fopenmp
ALL_CFLAGS = $(WARN) $(NUMERIC) $(CFLAGS) $(OMP) -I.
LDLIBS  = -lm

HEADERS = nsa.h nsa_ref.h
TOOLS_H = $(wildcard tools/*.h)
TEST_H  = $(wildcard tests/*.h)

PROGRAMS = $(BUILD)/example $(BUILD)/test_nsa $(BUILD)/test_nsa_clang \
           $(BUILD)/nsa_vectors $(BUILD)/nsa_vectors_clang $(BUILD)/test_npy \
           $(BUILD)/nsa_picture $(BUILD)/nsa_picture_clang $(BUILD)/bench_ref \
           $(BUILD)/cxx_headers.o $(BUILD)/digest $(BUILD)/digest_nosimd \
           $(BUILD)/digest_contract $(BUILD)/digest_contract_clang $(BUILD)/libnsa.so \
           $(BUILD)/test_cp_layout

.PHONY: all test sanitize mutants bench vectors pictures fuzz clean shared
all: $(PROGRAMS)

$(BUILD):
	mkdir -p $@

# gcc builds -------------------------------------------------------------
$(BUILD)/example: examples/example.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/test_nsa: tests/test_nsa.c $(HEADERS) $(TEST_H) $(TOOLS_H) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
# Context parallelism's plan replayed on the reference (no NCCL, no GPU).
$(BUILD)/test_cp_layout: tests/test_cp_layout.c $(HEADERS) nsa_cuda.h nsa_cp.h $(TEST_H) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/nsa_vectors: tools/nsa_vectors.c $(HEADERS) $(TOOLS_H) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/test_npy: tools/test_npy.c $(TOOLS_H) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/nsa_picture: tools/nsa_picture.c $(HEADERS) $(TOOLS_H) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/bench_ref: bench/bench_ref.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
# The reference with and without its vector kernels (tests/simd_same.sh).
$(BUILD)/digest: tests/digest.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/digest_nosimd: tests/digest.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -DNSA_REF_NO_SIMD $< $(LDLIBS) -o $@
# The reference as a user may build it: GNU C, the host's instruction set,
# each compiler's default contraction of a*b + c into fused multiply-adds
# (gcc: across statements; clang: within one), none of our flags.
CONTRACT_FLAGS = -std=gnu99 -O2 -march=native $(OMP) -I.
$(BUILD)/digest_contract: tests/digest.c $(HEADERS) | $(BUILD)
	$(CC) $(CONTRACT_FLAGS) $< $(LDLIBS) -o $@
$(BUILD)/digest_contract_clang: tests/digest.c $(HEADERS) | $(BUILD)
	$(CLANG) $(CONTRACT_FLAGS) $< $(LDLIBS) -o $@

# clang builds of the same sources ---------------------------------------
$(BUILD)/test_nsa_clang: tests/test_nsa.c $(HEADERS) $(TEST_H) $(TOOLS_H) | $(BUILD)
	$(CLANG) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/nsa_vectors_clang: tools/nsa_vectors.c $(HEADERS) $(TOOLS_H) | $(BUILD)
	$(CLANG) $(ALL_CFLAGS) $< $(LDLIBS) -o $@
$(BUILD)/nsa_picture_clang: tools/nsa_picture.c $(HEADERS) $(TOOLS_H) | $(BUILD)
	$(CLANG) $(ALL_CFLAGS) $< $(LDLIBS) -o $@

# The headers, implementations included, compiled as C++ ------------------
$(BUILD)/cxx_headers.o: tests/cxx_headers.cpp $(HEADERS) | $(BUILD)
	$(CXX) -std=c++11 -Wall -Wextra -Werror -ffp-contract=off -O2 -I. -c $< -o $@

# Tests ------------------------------------------------------------------
test: all
	VECTORS=$(VECTORS) BUILD=$(BUILD) bash tests/run.sh

# Sanitizers: a separate build folder, the same runner. The quick mode
# shrinks only the largest top-k rows (the sanitizers slow them 20x).
sanitize:
	$(MAKE) BUILD=build-san CC=$(CLANG) \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    build-san/test_nsa build-san/nsa_vectors build-san/test_npy build-san/nsa_picture \
	    build-san/digest build-san/digest_nosimd build-san/test_cp_layout
	NSA_TEST_QUICK=1 VECTORS=$(VECTORS) BUILD=build-san NSA_SANITIZE=1 bash tests/run.sh

# Mutation check: a scratch copy of the tree per mutant, one mutant per CPU
# at a time (MUTANT_JOBS; see tests/mutants.sh).
mutants:
	CC=$(CC) bash tests/mutants.sh

bench: $(BUILD)/bench_ref

# The Python binding's library (python/nsa.py loads it through ctypes).
$(BUILD)/libnsa.so: python/nsa_lib.c $(HEADERS) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -fPIC -shared $< $(LDLIBS) -o $@
HAVE_NVCC := $(shell command -v $(or $(NVCC),nvcc) >/dev/null 2>&1 && echo 1)
shared: $(BUILD)/libnsa.so $(if $(HAVE_NVCC),$(BUILD)/libnsa_cuda.so)

vectors: $(BUILD)/nsa_vectors
	rm -rf $(BUILD)/vectors
	$(BUILD)/nsa_vectors suite $(BUILD)/vectors
	$(BUILD)/nsa_vectors check $(BUILD)/vectors

pictures: $(BUILD)/nsa_picture
	$(BUILD)/nsa_picture --preset paper --out docs/selection_paper.svg
	$(BUILD)/nsa_picture --preset tile64 --tiles --out docs/selection_tile.svg

# Fuzzing: libFuzzer with AddressSanitizer and UBSan (any report aborts).
# New inputs go to build-fuzz/corpus/NAME; the seeds in tests/fuzz/corpus
# are read, never written. The tests pass when no target finds a crash.
FUZZ_TIME  ?= 60
FUZZ_FLAGS  = -std=c99 -Wall -Wextra -Werror -Wno-unknown-pragmas \
              $(NUMERIC) -g -O2 -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I.
FUZZERS     = fuzz_npy fuzz_json fuzz_validate

# FUZZ_RUNS=N runs each target N times instead of FUZZ_TIME seconds.
FUZZ_RUNS  ?=
# The validator target runs the reference's loops on every accepted input;
# comparison tracing there costs 5x the speed and guides nothing the
# harness's small-step fields do not already reach, so it is off for it.
build-fuzz/fuzz_validate: FUZZ_EXTRA = -fno-sanitize-coverage=trace-cmp
build-fuzz/%: tests/fuzz/%.c $(HEADERS) $(TOOLS_H)
	@mkdir -p build-fuzz
	$(CLANG) $(FUZZ_FLAGS) $(FUZZ_EXTRA) $< $(LDLIBS) -o $@

fuzz: $(addprefix build-fuzz/,$(FUZZERS))
	FUZZ_RUNS=$(FUZZ_RUNS) bash tests/fuzz/run.sh build-fuzz $(FUZZ_TIME) $(FUZZERS)

clean:
	rm -rf build build-san build-fuzz

-include cuda.mk
