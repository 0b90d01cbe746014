# cuda.mk -- the CUDA part of the build (included by the Makefile).
#
#   make cuda          compile and link all CUDA code with nvcc, warnings as
#                      errors, for sm_80 and sm_90a (no GPU needed: what CI runs)
#   make cuda-example  build/cuda_example: a C program (gcc) calling the GPU
#                      path through nsa_cuda.h, linked with one nvcc object
#   make cuda-test     build/test_cuda: GPU vs CPU reference cross-checks
#   make cuda-bench    build/bench_cuda: GPU benchmark
#   make build/test_cuda_portable  the cross-checks built for plain sm_90
#                      (the mma.sync kernels, also on a Hopper GPU)
#   make build/test_cuda_grad_lo   the cross-checks with NSA_GRAD_LO=2
#   make build/test_cuda_ranges    the cross-checks with the smallest
#                      accumulators (NSA_ACC_ROWS=1, NSA_KV_ACC_ROWS=1)
#   build/libnsa_cuda.so  the Python binding's library with the CUDA path:
#                      the reference from a C file that defines
#                      NSA_SHARED_IN_OTHER_FILE, the CUDA path and the shared
#                      part from nsa_cuda.o (the two-file case of nsa.h)
#
# On a machine with a GPU, tests/gpu.sh OUTDIR builds and runs all of it.

NVCC      ?= nvcc
BUILD     ?= build
CUDA_HOME ?= /usr/local/cuda
CUDA_ARCH ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a
NVCC_WARN  = -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror
NVCC_BASE  = -std=c++17 -O3 $(NVCC_WARN) -I. -Xcompiler -ffp-contract=off
NVCC_FLAGS = $(NVCC_BASE) $(CUDA_ARCH)
# The portable kernels: plain sm_90 compiles no sm_90a (wgmma) path, so on a
# Hopper GPU build/test_cuda_portable cross-checks the mma.sync kernels that
# sm_80 runs (tests/gpu.sh builds and runs it; `make cuda` does not).
PORTABLE_ARCH = -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90
CUDA_LIBS  = -L$(CUDA_HOME)/lib64 -lcudart
CUDA_SRC   = nsa_cuda.h $(wildcard kernels/*.cuh) nsa.h

.PHONY: cuda cuda-example cuda-test cuda-bench
cuda: $(BUILD)/cuda_example $(BUILD)/test_cuda $(BUILD)/bench_cuda $(BUILD)/libnsa_cuda.so
cuda-example: $(BUILD)/cuda_example
cuda-test: $(BUILD)/test_cuda
cuda-bench: $(BUILD)/bench_cuda

# The library object: nsa.h's shared part + the CUDA implementation.
# Position-independent, so that the shared library can use it too.
$(BUILD)/nsa_cuda.o: examples/nsa_cuda.cu $(CUDA_SRC) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -Xcompiler -fPIC -c $< -o $@

$(BUILD)/nsa_lib_ref.o: python/nsa_lib.c nsa.h nsa_ref.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -fPIC -DNSA_SHARED_IN_OTHER_FILE -c $< -o $@
$(BUILD)/libnsa_cuda.so: $(BUILD)/nsa_lib_ref.o $(BUILD)/nsa_cuda.o
	$(NVCC) -shared $(CUDA_ARCH) -cudart static $^ -o $@ -lgomp -lm

# A plain C program (gcc, C99) that never sees CUDA syntax.
$(BUILD)/cuda_example.o: examples/cuda_example.c nsa.h nsa_cuda.h | $(BUILD)
	$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -O2 -I. -isystem $(CUDA_HOME)/include -c $< -o $@
$(BUILD)/cuda_example: $(BUILD)/cuda_example.o $(BUILD)/nsa_cuda.o
	$(NVCC) $(CUDA_ARCH) $^ -o $@ $(CUDA_LIBS) -lm

# Tests and benchmarks: one translation unit each (reference + CUDA).
$(BUILD)/test_cuda: tests/test_cuda.cu $(CUDA_SRC) nsa_ref.h $(wildcard tools/*.h) tests/seed.h | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -Xcompiler -fopenmp $< -o $@ -lm -lgomp
$(BUILD)/test_cuda_portable: tests/test_cuda.cu $(CUDA_SRC) nsa_ref.h $(wildcard tools/*.h) tests/seed.h | $(BUILD)
	$(NVCC) $(NVCC_BASE) $(PORTABLE_ARCH) -Xcompiler -fopenmp $< -o $@ -lm -lgomp
# Every gradient product with its residual (NSA_GRAD_LO=2, grad_lo in
# kernels/nsa_attn.cuh; the default takes dS's alone): the switch's
# kernels cross-checked too.
$(BUILD)/test_cuda_grad_lo: tests/test_cuda.cu $(CUDA_SRC) nsa_ref.h $(wildcard tools/*.h) tests/seed.h | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -DNSA_GRAD_LO=2 -Xcompiler -fopenmp $< -o $@ -lm -lgomp
# The smallest accumulators: every row pass a range of queries at a time
# (NSA_ACC_ROWS=1: ranges of one step, 384 tokens at one-token units: whole
# tiles of 128 and of 192 rows) and
# the key-centric passes one kv head at a time (NSA_KV_ACC_ROWS=1), so
# that the ranges of nsa_cuda.h are cross-checked on batches of any size.
$(BUILD)/test_cuda_ranges: tests/test_cuda.cu $(CUDA_SRC) nsa_ref.h $(wildcard tools/*.h) tests/seed.h | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -DNSA_ACC_ROWS=1 -DNSA_KV_ACC_ROWS=1 -Xcompiler -fopenmp $< -o $@ -lm -lgomp
$(BUILD)/bench_cuda: bench/bench_cuda.cu $(CUDA_SRC) | $(BUILD)
	$(NVCC) $(NVCC_FLAGS) $< -o $@ -lm

# Context parallelism (nsa_cp.h) over NCCL: only with `make cp`, never part
# of `make cuda`. NCCL_HOME holds include/nccl.h and lib/libnccl.so[.2];
# by default python3's nvidia-nccl wheel (pip install nvidia-nccl-cu13).
#   make cp    build/test_cp: 1- and 2-rank checks, and --bench T
NCCL_HOME ?= $(shell python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null)
NCCL_LIB   = $(firstword $(wildcard $(NCCL_HOME)/lib/libnccl.so $(NCCL_HOME)/lib/libnccl.so.2))

.PHONY: cp
cp: $(BUILD)/test_cp
$(BUILD)/test_cp: tests/test_cp.cu tests/seed.h nsa_cp.h $(CUDA_SRC) nsa_ref.h | $(BUILD)
	@test -f "$(NCCL_HOME)/include/nccl.h" && test -n "$(NCCL_LIB)" || \
	    { echo "NCCL not found: set NCCL_HOME (include/nccl.h, lib/libnccl.so*)"; exit 1; }
	$(NVCC) $(NVCC_FLAGS) -isystem $(NCCL_HOME)/include -Xcompiler -fopenmp $< -o $@ \
	    -L$(NCCL_HOME)/lib -l:$(notdir $(NCCL_LIB)) -Xlinker -rpath,$(NCCL_HOME)/lib -lm -lgomp
