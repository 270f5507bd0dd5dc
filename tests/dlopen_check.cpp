// Loads the shared library after start-up, as a program loading plugins
// would. Its per-thread state uses the initial-exec TLS model, which must
// still find room then; dlopen() fails if it does not.
#include <dlfcn.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: dlopen_check LIBRARY\n");
    return 2;
  }
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::fprintf(stderr, "dlopen %s failed: %s\n", argv[1], dlerror());
    return 1;
  }
  std::printf("loaded %s\n", argv[1]);
  dlclose(library);
  return 0;
}
