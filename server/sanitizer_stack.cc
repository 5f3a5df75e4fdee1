// Sanitizer builds only (linked into braidd when BRAID_SANITIZE is on).
//
// The Prometheus exporter's HTTP server (civetweb, a Debian shared library) gives its worker
// threads a small fixed stack through pthread_attr_setstacksize. Under AddressSanitizer the
// instrumented frames and the printf interceptors need several times more, and a scrape overflows
// it. This definition interposes the libc function for the whole process and raises any requested
// size to at least 8 MiB; release builds do not contain it.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cstddef>

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real(attr, std::max<size_t>(size, size_t{8} << 20));
}
