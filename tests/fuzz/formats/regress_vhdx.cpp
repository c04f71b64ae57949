// The vhdx fuzz entry point under its own name, for the corpus regression test.
#define LLVMFuzzerTestOneInput fuzz_vhdx_entry
#include "fuzz_vhdx.cpp"
