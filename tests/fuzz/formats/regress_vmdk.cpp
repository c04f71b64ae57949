// The vmdk fuzz entry point under its own name, for the corpus regression test.
#define LLVMFuzzerTestOneInput fuzz_vmdk_entry
#include "fuzz_vmdk.cpp"
