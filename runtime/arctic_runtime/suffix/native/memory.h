// Memory of the native tries: huge-page slabs, the pool of node chunks every trie of one cache draws
// from, chunked arrays in that pool, and the (parent, token) -> child hash table.
//
// Records live in 40 KB chunks (2048 records) handed out by one pool per cache, carved from 2 MB slabs
// that are asked for as transparent huge pages: one page fault per 2 MB instead of one per 4 KB, and a
// finished request's chunks are reused by the next ones without faulting again. Idle chunks beyond one
// slab more than are in use are given back to the OS (madvise DONTNEED).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "common.h"

namespace arctic_suffix {

constexpr size_t kHugePage = size_t{2} << 20;  // 2 MB: one transparent huge page

// `bytes` (a multiple of kHugePage) of zeroed memory, 2 MB aligned and asked for as transparent huge
// pages: one page fault and one TLB entry per 2 MB. Throws std::bad_alloc.
void* alloc_huge(size_t bytes);
void free_huge(void* p, size_t bytes);
// Give idle memory back to the OS (it reads as zeros when touched again); no-op where unsupported.
void release_to_os(void* p, size_t bytes);

// (parent, token) -> child, linear probing, backward-shift deletion, load factor <= 1/2. Tables of
// 2 MB and more are on huge pages (in a large global trie every lookup is a cache miss; this spares
// the TLB miss on top).
class ChildMap {
 public:
  ChildMap() = default;
  ChildMap(const ChildMap&) = delete;
  ChildMap& operator=(const ChildMap&) = delete;
  ~ChildMap() { release(); }

  uint32_t find(uint32_t parent, int32_t token) const {
    if (size_ == 0) return NIL;
    size_t i = mix(parent, token) & mask_;
    for (;;) {
      const Slot& s = slots_[i];
      if (s.parent == NIL) return NIL;
      if (s.parent == parent && s.token == token) return s.child;
      i = (i + 1) & mask_;
    }
  }

  void prefetch(uint32_t parent, int32_t token) const {
    if (size_ != 0) arctic_suffix::prefetch(&slots_[mix(parent, token) & mask_]);
  }

  void insert(uint32_t parent, int32_t token, uint32_t child) {  // the key must be absent
    if ((used_ + 1) * 2 > size_) grow();
    size_t i = mix(parent, token) & mask_;
    while (slots_[i].parent != NIL) i = (i + 1) & mask_;
    slots_[i] = Slot{parent, token, child};
    ++used_;
  }

  void erase(uint32_t parent, int32_t token) {
    if (size_ == 0) return;
    size_t i = mix(parent, token) & mask_;
    for (;;) {
      const Slot& s = slots_[i];
      if (s.parent == NIL) return;
      if (s.parent == parent && s.token == token) break;
      i = (i + 1) & mask_;
    }
    size_t j = i;
    for (;;) {
      j = (j + 1) & mask_;
      if (slots_[j].parent == NIL) break;
      const size_t home = mix(slots_[j].parent, slots_[j].token) & mask_;
      // The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
      const bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i].parent = NIL;
    --used_;
  }

  void release() {
    free_slots(slots_, size_);
    slots_ = nullptr;
    size_ = 0;
    mask_ = 0;
    used_ = 0;
  }

  size_t bytes() const { return alloc_bytes(size_); }

 private:
  struct Slot {
    uint32_t parent;  // NIL: empty
    int32_t token;
    uint32_t child;
  };

  static bool huge(size_t size) { return size * sizeof(Slot) >= kHugePage; }
  static size_t alloc_bytes(size_t size) {
    const size_t bytes = size * sizeof(Slot);
    return huge(size) ? (bytes + kHugePage - 1) & ~(kHugePage - 1) : bytes;
  }
  static Slot* alloc_slots(size_t size) {
    void* p = huge(size) ? alloc_huge(alloc_bytes(size)) : std::malloc(alloc_bytes(size));
    if (p == nullptr) throw std::bad_alloc();
    Slot* slots = static_cast<Slot*>(p);
    std::fill(slots, slots + size, Slot{NIL, 0, NIL});
    return slots;
  }
  static void free_slots(Slot* slots, size_t size) {
    if (slots == nullptr) return;
    if (huge(size)) {
      free_huge(slots, alloc_bytes(size));
    } else {
      std::free(slots);
    }
  }

  void grow() {
    const size_t size = size_ == 0 ? 16 : size_ * 2;
    Slot* fresh = alloc_slots(size);
    Slot* old = slots_;
    const size_t old_size = size_;
    slots_ = fresh;
    size_ = size;
    mask_ = size - 1;
    for (size_t k = 0; k < old_size; ++k) {
      const Slot& s = old[k];
      if (s.parent == NIL) continue;
      size_t i = mix(s.parent, s.token) & mask_;
      while (slots_[i].parent != NIL) i = (i + 1) & mask_;
      slots_[i] = s;
    }
    free_slots(old, old_size);
  }

  Slot* slots_ = nullptr;
  size_t size_ = 0;
  size_t mask_ = 0;
  size_t used_ = 0;
};

// Chunks of nodes for every trie of one cache (see the header comment).
class NodePool {
 public:
  static constexpr size_t kShift = 11;
  static constexpr size_t kChunkNodes = size_t{1} << kShift;  // 2048 nodes
  static constexpr size_t kChunkBytes = kChunkNodes * sizeof(Node);  // 40 KB
  static constexpr size_t kSlabBytes = kHugePage;
  static constexpr size_t kChunksPerSlab = kSlabBytes / kChunkBytes;  // 51 (8 KB of a slab unused)

  NodePool() = default;
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;
  ~NodePool() {
    for (void* slab : slabs_) free_slab(slab);
  }

  Node* get() {
    if (warm_.empty() && cold_.empty()) add_slab();
    Node* chunk;
    if (!warm_.empty()) {
      chunk = warm_.back();
      warm_.pop_back();
    } else {
      chunk = cold_.back();
      cold_.pop_back();
    }
    ++in_use_;
    return chunk;
  }

  void put(Node* chunk) {  // never allocates: add_slab reserved room for every chunk
    --in_use_;
    warm_.push_back(chunk);
    // Idle beyond a slab more than is in use: give the memory back to the OS (the chunk stays in the
    // pool, and is faulted in again if it is reused).
    while (warm_.size() > in_use_ + kChunksPerSlab) {
      Node* idle = warm_.back();
      warm_.pop_back();
      release_to_os(idle, kChunkBytes);
      cold_.push_back(idle);
    }
  }

  // Memory the pool holds from the OS: every slab, less the idle chunks given back.
  size_t resident_bytes() const { return (slabs_.size() * kChunksPerSlab - cold_.size()) * kChunkBytes; }

 private:
  void add_slab() {
    const size_t total = (slabs_.size() + 1) * kChunksPerSlab;
    slabs_.reserve(slabs_.size() + 1);
    warm_.reserve(total);
    cold_.reserve(total);
    char* slab = static_cast<char*>(alloc_slab());
    slabs_.push_back(slab);
    for (size_t k = kChunksPerSlab; k-- > 0;) warm_.push_back(reinterpret_cast<Node*>(slab + k * kChunkBytes));
  }

  static void* alloc_slab() { return alloc_huge(kSlabBytes); }
  static void free_slab(void* slab) { free_huge(slab, kSlabBytes); }

  std::vector<void*> slabs_;
  std::vector<Node*> warm_;  // idle chunks, resident
  std::vector<Node*> cold_;  // idle chunks given back to the OS
  size_t in_use_ = 0;
};

// A growable array of trivially copyable T (the global trie's links) in the pool's chunks: on huge
// pages like the nodes (links of random nodes are read and written: no TLB miss on top of the cache
// miss), and handed back to the pool when released.
template <typename T>
class ChunkedArray {
 public:
  static constexpr size_t kChunk = NodePool::kChunkBytes / sizeof(T);  // 10240 uint32

  explicit ChunkedArray(NodePool& pool) : pool_(pool) {}
  ChunkedArray(const ChunkedArray&) = delete;
  ChunkedArray& operator=(const ChunkedArray&) = delete;
  ~ChunkedArray() { release(); }

  T& operator[](size_t i) { return chunks_[i / kChunk][i % kChunk]; }
  const T& operator[](size_t i) const { return chunks_[i / kChunk][i % kChunk]; }
  size_t bytes() const { return chunks_.capacity() * sizeof(T*); }  // the chunks are the pool's

  void ensure(size_t n) {  // room for indices < n
    while (chunks_.size() * kChunk < n) {
      chunks_.reserve(chunks_.size() + 1);
      chunks_.push_back(reinterpret_cast<T*>(pool_.get()));
    }
  }

  void release() {
    for (T* chunk : chunks_) pool_.put(reinterpret_cast<Node*>(chunk));
    std::vector<T*>().swap(chunks_);
  }

 private:
  NodePool& pool_;
  std::vector<T*> chunks_;
};

}  // namespace arctic_suffix
