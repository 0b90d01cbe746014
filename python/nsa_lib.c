/* nsa_lib.c -- the shared library behind the Python module (python/nsa.py):
   the reference and nsa.h's shared part, as plain C symbols.

     make shared    build/libnsa.so; where nvcc exists also
                    build/libnsa_cuda.so (this file compiled with
                    NSA_SHARED_IN_OTHER_FILE, linked with examples/nsa_cuda.cu,
                    which holds the shared part and the CUDA path)

   nsa_py_layout lets the module check that its ctypes mirrors of the
   structs have the sizes this compiler gave them. */
#define NSA_REF_IMPLEMENTATION
#include "../nsa_ref.h"

NSADEF int64_t nsa_py_layout(int i);
NSADEF int64_t nsa_py_layout(int i)
{
    switch (i) {
    case 0: return (int64_t)sizeof(nsa_config);
    case 1: return (int64_t)sizeof(nsa_batch);
    case 2: return (int64_t)sizeof(nsa_sizes);
    case 3: return (int64_t)sizeof(nsa_saved);
    case 4: return (int64_t)sizeof(nsa_grads);
    case 5: return (int64_t)offsetof(nsa_batch, sel_count);
    case 6: return (int64_t)offsetof(nsa_sizes, v_stride_head);
    default: return -1;
    }
}
