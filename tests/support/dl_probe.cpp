// A shared library for test_shared_library: found only in its build folder, never on the
// loader's path, so loading it by name alone fails and the fallback folder has to be tried.
extern "C" __attribute__((visibility("default"))) int moe_dl_probe() { return 42; }
