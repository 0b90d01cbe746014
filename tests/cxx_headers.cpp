// The headers compile as C++ (extern "C" declarations, implementations
// included): what a C++ trainer that includes them sees.
#define NSA_REF_IMPLEMENTATION
#include "nsa_ref.h"
#include "nsa_cuda.h"

int nsa_cxx_headers_compile(void);
int nsa_cxx_headers_compile(void)
{
    nsa_config cfg = nsa_config_paper();
    return nsa_config_validate(&cfg) == NSA_OK ? 0 : 1;
}
