// The luks fuzz entry point under its own name, for the corpus regression test.
#define LLVMFuzzerTestOneInput fuzz_luks_entry
#include "fuzz_luks.cpp"
