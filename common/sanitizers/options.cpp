// The sanitizers' default options, linked into every executable of a sanitized build
// (MOE_ASAN / MOE_UBSAN). The runtimes read them before the environment, so ASAN_OPTIONS,
// LSAN_OPTIONS and UBSAN_OPTIONS still override any of them.
//
// NOTES: they are compiled in rather than left to the test runner because the build itself
// runs the test binaries (GoogleTest discovery), each of which starts MPI; without the leak
// suppressions there, LeakSanitizer fails the build on Open MPI's own allocations.

extern "C" {

// Visible to the runtimes, which look these up by name.
__attribute__((visibility("default"), used)) const char* __asan_default_options() {
  // fast_unwind_on_malloc=0: Open MPI's libraries are built without frame pointers, so the
  // fast unwinder stops in them and a leak's stack ends in "<unknown module>", which no
  // suppression can name. The slow unwinder follows their unwind tables.
  return "fast_unwind_on_malloc=0:detect_leaks=1:check_initialization_order=1";
}

__attribute__((visibility("default"), used)) const char* __lsan_default_options() {
  return "fast_unwind_on_malloc=0:print_suppressions=0:suppressions=" MOE_LSAN_SUPPRESSIONS;
}

__attribute__((visibility("default"), used)) const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1";
}

}  // extern "C"
