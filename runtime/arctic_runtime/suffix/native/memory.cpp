// Huge-page slabs (see memory.h).
#include "memory.h"

#include <cstdint>
#include <cstdlib>
#include <new>

#ifndef _WIN32
#include <sys/mman.h>
#endif

namespace arctic_suffix {

#ifndef _WIN32
void* alloc_huge(size_t bytes) {
  void* raw = mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + bytes + kHugePage;
  if (end > aligned + bytes) munmap(reinterpret_cast<void*>(aligned + bytes), end - aligned - bytes);
  void* p = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}
void free_huge(void* p, size_t bytes) { munmap(p, bytes); }
void release_to_os(void* p, size_t bytes) {
#ifdef MADV_DONTNEED
  madvise(p, bytes, MADV_DONTNEED);
#else
  (void)p;
  (void)bytes;
#endif
}
#else
void* alloc_huge(size_t bytes) {
  void* p = std::calloc(bytes, 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void free_huge(void* p, size_t) { std::free(p); }
void release_to_os(void*, size_t) {}
#endif

}  // namespace arctic_suffix
