/* nsa_cuda.cu -- the one translation unit that compiles the CUDA
   implementation. Build it with nvcc and link the object into a C or C++
   program that includes nsa_cuda.h (see cuda_example.c and cuda.mk). */
#define NSA_CUDA_IMPLEMENTATION
#include "../nsa_cuda.h"
