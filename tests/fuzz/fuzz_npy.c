/* fuzz_npy.c -- libFuzzer target for the .npy reader (tools/npy.h).

   The checker reads .npy files that a porter hands it, so npy_read_mem must
   turn any byte string into either a well-formed array or an error: no read
   or write outside its buffers, no undefined behaviour, no leak. On success
   the array must be self-consistent (count = product of shape, every element
   readable through npy_get), which the target checks.

   Build and run: make fuzz (clang -fsanitize=fuzzer,address,undefined). */
#include "../../tools/npy.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    npy_array a;
    char err[256];
    int64_t i, count = 1;
    double sum = 0.0;
    if (npy_read_mem(data, size, &a, err, sizeof err) != 0) {
        if (a.data != NULL) abort(); /* an error leaves nothing allocated */
        return 0;
    }
    if (a.ndim < 0 || a.ndim > NPY_MAX_DIMS) abort();
    for (i = 0; i < a.ndim; ++i) {
        if (a.shape[i] < 0) abort();
        count *= a.shape[i];
    }
    if (count != a.count || (uint64_t)a.count * npy_dtype_size(a.dtype) > size)
        abort();
    for (i = 0; i < a.count; ++i) sum += npy_get(&a, i);
    (void)sum;
    npy_free(&a);
    return 0;
}
