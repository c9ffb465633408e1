// Native backend of suffix decoding: the whole SuffixDecodingCache of tree.py in C++17 on the plain
// CPython C API. Results are identical to the pure-Python reference (same drafts, same float
// arithmetic in the same order, same tie-breaking, same node counts); tests/unit/test_suffix_native.py
// checks that against the reference with random operations.
//
// Layout. A trie node is 16 bytes: token, count, newest child, next older sibling. A node's
// children form a singly linked list, newest first: "the first inserted child" is the list's last,
// so ties in the greedy draft go to the last of equal counts and the tree draft walks the list
// backwards, which reproduces the reference's dict order. A child is found by scanning the list
// while it is short; a node with more than kScanLimit children also has them in the trie's
// open-addressing hash table keyed by (parent, token) (marked by the top bit of its count).
//
// Memory. Nodes live in 32 KB chunks (2048 nodes) handed out by one pool per cache, carved from
// 2 MB slabs that are asked for as transparent huge pages: one page fault per 2 MB instead of one
// per 4 KB, and a finished request's chunks are reused by the next ones without faulting again.
// Idle chunks beyond one slab more than are in use are given back to the OS (madvise DONTNEED).
// Each request has its own local trie (its chunks go back to the pool when it stops), its active
// nodes by depth and its token sequence. The global trie (responses of finished requests) also keeps,
// per node, the previous sibling (O(1) unlink when eviction deletes a node; deleted nodes go on a
// free list and are reused) and the suffix link (the node of the path minus its first token).
//
// Global matching. With suffix links, the longest suffix of a context found in the trie is computed
// in one left-to-right pass (matching statistics), and kept up to date per request as tokens are
// appended (O(1) amortized lookups per token) until the global trie changes (its version moves on
// every insertion or removal), after which it is recomputed from the last max_match_len tokens. The
// match speculation needs is then the longest of those suffixes that has a continuation, found by
// following suffix links. This equals the reference's longest-first + binary search, because "the
// last L tokens occur and have a continuation" is monotone in L (see SuffixTree.match in tree.py).
//
// Floating point: compiled with -ffp-contract=off so no multiply-add is fused; Python never fuses.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#ifndef _WIN32
#include <sys/mman.h>
#endif

namespace {

constexpr uint32_t NIL = 0xFFFFFFFFu;
constexpr uint32_t kHashed = 0x80000000u;     // in Node::count: the children are in the hash table
constexpr uint32_t kCountMask = 0x7FFFFFFFu;  // in Node::count: the occurrence count
constexpr uint32_t kScanLimit = 8;            // children found by scanning the sibling list
constexpr uint32_t kMaxNodes = 0xFFFFFFF0u;   // node indices stay below NIL
constexpr double kCeilSlack = 1e-9;           // tree.py's _CEIL_SLACK

struct Node {
  int32_t token;
  uint32_t count;  // occurrences | kHashed
  uint32_t first;  // newest child, NIL if none
  uint32_t next;   // next older sibling (on the free list: the next free node)
};
static_assert(sizeof(Node) == 16, "Node is 16 bytes");

// A trie too large for 32-bit counts or indices (billions of tokens): OverflowError.
struct CapacityError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline uint64_t mix(uint32_t parent, int32_t token) {
  uint64_t x = (static_cast<uint64_t>(parent) << 32) | static_cast<uint32_t>(token);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// (parent, token) -> child, linear probing, backward-shift deletion, load factor <= 1/2.
class ChildMap {
 public:
  uint32_t find(uint32_t parent, int32_t token) const {
    if (slots_.empty()) return NIL;
    size_t i = mix(parent, token) & mask_;
    for (;;) {
      const Slot& s = slots_[i];
      if (s.parent == NIL) return NIL;
      if (s.parent == parent && s.token == token) return s.child;
      i = (i + 1) & mask_;
    }
  }

  void insert(uint32_t parent, int32_t token, uint32_t child) {  // the key must be absent
    if ((used_ + 1) * 2 > slots_.size()) grow();
    size_t i = mix(parent, token) & mask_;
    while (slots_[i].parent != NIL) i = (i + 1) & mask_;
    slots_[i] = Slot{parent, token, child};
    ++used_;
  }

  void erase(uint32_t parent, int32_t token) {
    if (slots_.empty()) return;
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
    std::vector<Slot>().swap(slots_);
    mask_ = 0;
    used_ = 0;
  }

  size_t bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    uint32_t parent;  // NIL: empty
    int32_t token;
    uint32_t child;
  };

  void grow() {
    const size_t size = slots_.empty() ? 16 : slots_.size() * 2;
    std::vector<Slot> old(size, Slot{NIL, 0, NIL});
    old.swap(slots_);
    mask_ = size - 1;
    for (const Slot& s : old) {
      if (s.parent == NIL) continue;
      size_t i = mix(s.parent, s.token) & mask_;
      while (slots_[i].parent != NIL) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t used_ = 0;
};

// Chunks of nodes for every trie of one cache (see the header comment).
class NodePool {
 public:
  static constexpr size_t kShift = 11;
  static constexpr size_t kChunkNodes = size_t{1} << kShift;  // 2048 nodes
  static constexpr size_t kChunkBytes = kChunkNodes * sizeof(Node);  // 32 KB
  static constexpr size_t kSlabBytes = size_t{2} << 20;  // 2 MB: one transparent huge page
  static constexpr size_t kChunksPerSlab = kSlabBytes / kChunkBytes;

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
#if defined(MADV_DONTNEED) && !defined(_WIN32)
      madvise(idle, kChunkBytes, MADV_DONTNEED);
#endif
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

#ifndef _WIN32
  // 2 MB aligned, so that the kernel can back it with one huge page.
  static void* alloc_slab() {
    void* raw = mmap(nullptr, 2 * kSlabBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kSlabBytes - 1) & ~(uintptr_t{kSlabBytes} - 1);
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t end = start + 2 * kSlabBytes;
    if (end > aligned + kSlabBytes) munmap(reinterpret_cast<void*>(aligned + kSlabBytes), end - aligned - kSlabBytes);
    void* slab = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
    madvise(slab, kSlabBytes, MADV_HUGEPAGE);
#endif
    return slab;
  }
  static void free_slab(void* slab) { munmap(slab, kSlabBytes); }
#else
  static void* alloc_slab() {
    void* slab = std::malloc(kSlabBytes);
    if (slab == nullptr) throw std::bad_alloc();
    return slab;
  }
  static void free_slab(void* slab) { std::free(slab); }
#endif

  std::vector<void*> slabs_;
  std::vector<Node*> warm_;  // idle chunks, resident
  std::vector<Node*> cold_;  // idle chunks given back to the OS
  size_t in_use_ = 0;
};

// A growable array of trivially copyable T in malloc'd chunks of 4096 (the global trie's links).
template <typename T>
class ChunkedArray {
 public:
  static constexpr size_t kShift = 12;
  static constexpr size_t kChunk = size_t{1} << kShift;

  ChunkedArray() = default;
  ChunkedArray(const ChunkedArray&) = delete;
  ChunkedArray& operator=(const ChunkedArray&) = delete;
  ~ChunkedArray() { release(); }

  T& operator[](size_t i) { return chunks_[i >> kShift][i & (kChunk - 1)]; }
  const T& operator[](size_t i) const { return chunks_[i >> kShift][i & (kChunk - 1)]; }
  size_t bytes() const { return chunks_.size() * kChunk * sizeof(T) + chunks_.capacity() * sizeof(T*); }

  void ensure(size_t n) {  // room for indices < n
    while ((chunks_.size() << kShift) < n) {
      chunks_.reserve(chunks_.size() + 1);
      void* p = std::malloc(kChunk * sizeof(T));
      if (p == nullptr) throw std::bad_alloc();
      chunks_.push_back(static_cast<T*>(p));
    }
  }

  void release() {
    for (T* chunk : chunks_) std::free(chunk);
    std::vector<T*>().swap(chunks_);
  }

 private:
  std::vector<T*> chunks_;
};

struct Match {
  uint32_t node;
  long length;
};

// A trie of every suffix (truncated at max_depth) of the sequences inserted, with counts; see tree.py's
// SuffixTree. `global` tries also keep previous siblings and suffix links (removal, fast matching).
class Trie {
 public:
  Trie(NodePool& pool, int max_depth, bool global) : pool_(pool), max_depth_(max_depth), global_(global) {
    reset();
  }
  Trie(const Trie&) = delete;
  Trie& operator=(const Trie&) = delete;
  ~Trie() { release(); }

  void reset() {
    release();
    size_ = 0;
    free_head_ = NIL;
    num_nodes_ = 0;
    ++version_;
    append(Node{0, 0, NIL, NIL});  // the root
  }

  size_t num_nodes() const { return num_nodes_; }
  uint32_t root_count() const { return count(0); }
  uint64_t version() const { return version_; }
  // Bytes held besides the node chunks (those are the pool's): chunk table, links, hash table.
  size_t overhead_bytes() const {
    return chunks_.capacity() * sizeof(Node*) + prev_.bytes() + slink_.bytes() + map_.bytes() +
           stack_.capacity() * sizeof(uint32_t);
  }

  const Node& node(uint32_t i) const { return chunks_[i >> NodePool::kShift][i & (NodePool::kChunkNodes - 1)]; }
  uint32_t count(uint32_t i) const { return node(i).count & kCountMask; }
  bool has_children(uint32_t i) const { return node(i).first != NIL; }

  uint32_t find_child(uint32_t parent, int32_t token) const {
    const Node& p = node(parent);
    if (p.count & kHashed) return map_.find(parent, token);
    for (uint32_t c = p.first; c != NIL; c = node(c).next) {
      if (node(c).token == token) return c;
    }
    return NIL;
  }

  // Append `tokens` to a sequence whose active nodes (depth 0 .. < max_depth) are `active`.
  void extend(std::vector<uint32_t>& active, const int32_t* tokens, size_t n) {
    if (n > static_cast<size_t>(kCountMask - count(0))) {
      throw CapacityError("a suffix trie cannot hold more than 2**31 - 1 tokens");
    }
    ++version_;
    const size_t max_depth = static_cast<size_t>(max_depth_);
    for (size_t k = 0; k < n; ++k) {
      const int32_t token = tokens[k];
      at(0).count += 1;
      const size_t depth = active.size();
      uint32_t carry = 0;  // the new active node one level up: the root, then each new child
      for (size_t d = 0; d < depth; ++d) {
        const uint32_t parent = active[d];
        active[d] = carry;
        const uint32_t child = child_or_create(parent, token, carry);
        at(child).count += 1;
        carry = child;
      }
      if (depth < max_depth) active.push_back(carry);  // else: depth max_depth is never extended
    }
  }

  // Take out every count a sequence of `tokens` added (global tries only); tree.py's remove().
  void remove(const int32_t* tokens, size_t n) {
    ++version_;
    at(0).count -= static_cast<uint32_t>(n);
    const size_t max_depth = static_cast<size_t>(max_depth_);
    for (size_t start = 0; start < n; ++start) {
      const size_t end = std::min(start + max_depth, n);
      uint32_t parent = 0;
      for (size_t i = start; i < end; ++i) {
        const uint32_t child = find_child(parent, tokens[i]);
        if (child == NIL) break;  // cannot happen while the counts are consistent
        at(child).count -= 1;
        if (count(child) == 0) {
          unlink(parent, child);
          free_subtree(child);  // a chain of end - i nodes: no other occurrence is left below
          break;
        }
        parent = child;
      }
    }
    if (num_nodes_ == 0 && count(0) == 0) reset();  // empty: give the memory back
  }

  // Matching (global tries only). advance() appends one token to a context whose longest suffix of
  // at most `cap` tokens found in the trie is (node, length), keeping that invariant.
  void advance(uint32_t& node_index, long& length, int32_t token, long cap) const {
    for (;;) {
      const uint32_t child = find_child(node_index, token);
      if (child != NIL) {
        node_index = child;
        ++length;
        break;
      }
      if (length == 0) return;
      node_index = slink_[node_index];
      --length;
    }
    if (length > cap) {
      node_index = slink_[node_index];
      --length;
    }
  }

  // The longest suffix of context[0..n) of at most `cap` tokens found in the trie.
  Match longest_present(const int32_t* context, size_t n, long cap) const {
    Match m{0, 0};
    const long limit = std::min(static_cast<long>(n), cap);
    if (limit <= 0) return m;
    for (size_t i = n - static_cast<size_t>(limit); i < n; ++i) advance(m.node, m.length, context[i], cap);
    return m;
  }

  // The longest suffix of `m` (itself included) whose node has a child: tree.py's match() result.
  Match with_continuation(Match m) const {
    while (m.length > 0 && !has_children(m.node)) {
      m.node = slink_[m.node];
      --m.length;
    }
    return m;
  }

 private:
  Node& at(uint32_t i) { return chunks_[i >> NodePool::kShift][i & (NodePool::kChunkNodes - 1)]; }

  void release() {
    for (Node* chunk : chunks_) pool_.put(chunk);
    std::vector<Node*>().swap(chunks_);
    prev_.release();
    slink_.release();
    map_.release();
    std::vector<uint32_t>().swap(stack_);
  }

  uint32_t append(const Node& value) {
    if (size_ >= kMaxNodes) throw CapacityError("a suffix trie cannot hold more than 2**32 - 16 nodes");
    if ((size_ >> NodePool::kShift) == chunks_.size()) {
      chunks_.reserve(chunks_.size() + 1);
      chunks_.push_back(pool_.get());
    }
    if (global_) {
      prev_.ensure(size_ + 1);
      slink_.ensure(size_ + 1);
    }
    const uint32_t i = static_cast<uint32_t>(size_++);
    at(i) = value;
    return i;
  }

  uint32_t alloc(int32_t token) {
    uint32_t i;
    if (free_head_ != NIL) {
      i = free_head_;
      free_head_ = node(i).next;
      at(i) = Node{token, 0, NIL, NIL};
    } else {
      i = append(Node{token, 0, NIL, NIL});
    }
    ++num_nodes_;
    return i;
  }

  uint32_t child_or_create(uint32_t parent, int32_t token, uint32_t link) {
    const bool hashed = (node(parent).count & kHashed) != 0;
    uint32_t siblings = 0;
    if (hashed) {
      const uint32_t found = map_.find(parent, token);
      if (found != NIL) return found;
    } else {
      for (uint32_t c = node(parent).first; c != NIL; c = node(c).next, ++siblings) {
        if (node(c).token == token) return c;
      }
    }
    const uint32_t child = alloc(token);
    Node& p = at(parent);
    const uint32_t old_first = p.first;
    at(child).next = old_first;
    p.first = child;
    if (global_) {
      slink_[child] = link;
      prev_[child] = NIL;
      if (old_first != NIL) prev_[old_first] = child;
    }
    if (hashed) {
      map_.insert(parent, token, child);
    } else if (siblings + 1 > kScanLimit) {
      p.count |= kHashed;
      for (uint32_t c = p.first; c != NIL; c = node(c).next) map_.insert(parent, node(c).token, c);
    }
    return child;
  }

  void unlink(uint32_t parent, uint32_t child) {
    const uint32_t before = prev_[child];
    const uint32_t after = node(child).next;
    if (before == NIL) {
      at(parent).first = after;
    } else {
      at(before).next = after;
    }
    if (after != NIL) prev_[after] = before;
    if (node(parent).count & kHashed) map_.erase(parent, node(child).token);
  }

  void free_subtree(uint32_t top) {
    stack_.clear();
    stack_.push_back(top);
    while (!stack_.empty()) {
      const uint32_t i = stack_.back();
      stack_.pop_back();
      const bool hashed = (node(i).count & kHashed) != 0;
      for (uint32_t c = node(i).first; c != NIL; c = node(c).next) {
        if (hashed) map_.erase(i, node(c).token);
        stack_.push_back(c);
      }
      at(i) = Node{0, 0, NIL, free_head_};
      free_head_ = i;
      --num_nodes_;
    }
  }

  NodePool& pool_;
  int max_depth_;
  bool global_;
  std::vector<Node*> chunks_;
  size_t size_ = 0;  // node slots used (nodes + free list + root)
  ChunkedArray<uint32_t> prev_;   // global only: previous (newer) sibling
  ChunkedArray<uint32_t> slink_;  // global only: suffix link
  ChildMap map_;
  uint32_t free_head_ = NIL;
  size_t num_nodes_ = 0;
  uint64_t version_ = 0;
  std::vector<uint32_t> stack_;
};

struct Request {
  Request(NodePool& pool, int max_depth) : trie(pool, max_depth, false) { active.push_back(0); }
  Trie trie;
  std::vector<uint32_t> active;  // active[d]: node of the last d tokens, d < max_depth
  std::vector<int32_t> tokens;   // prompt + output
  size_t prompt_len = 0;
  // The longest suffix of `tokens` (at most max_match_len) in the global trie, valid while the
  // global trie's version is `global_version`.
  uint32_t global_node = 0;
  long global_length = 0;
  uint64_t global_version = 0;  // 0: never computed (trie versions start at 1)

  size_t bytes() const {
    return sizeof(Request) + trie.overhead_bytes() + active.capacity() * sizeof(uint32_t) +
           tokens.capacity() * sizeof(int32_t);
  }
};

struct CachedResponse {
  std::vector<int32_t> tokens;
  PyObject* req_id;  // owned
};

struct Config {
  int max_depth;
  long max_spec_tokens;
  double max_spec_factor;
  double max_spec_offset;
  double min_token_prob;
  Py_ssize_t max_cached_requests;
  long max_match_len() const { return max_depth - max_spec_tokens; }
  // tree.py's match(context, max_match_len) tries suffixes of at most this many tokens.
  long match_cap() const { return std::min(static_cast<long>(max_depth) - 1, max_match_len()); }
};

enum Source { kNone = 0, kLocal = 1, kGlobal = 2 };

struct DraftOut {
  std::vector<int32_t> tokens;
  std::vector<int32_t> parents;
  std::vector<double> probs;
  double score = 0.0;
  long match_len = 0;
  Source source = kNone;
};

struct Candidate {
  double prob;
  uint64_t order;
  int32_t parent;
  int32_t depth;
  uint32_t node;
  int32_t token;
};

// Max-heap order for std::push_heap: the top is the highest prob, then the lowest order (tree.py's
// heapq of (-prob, order, ...)).
struct CandidateLess {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.prob != b.prob) return a.prob < b.prob;
    return a.order > b.order;
  }
};

struct State {
  explicit State(const Config& c) : cfg(c), global(pool, c.max_depth, true) {}
  ~State() {
    for (Request* r : slots) delete r;
    for (auto& item : cached) Py_XDECREF(item.second.req_id);
  }
  Config cfg;
  NodePool pool;  // before every trie: destroyed after them
  std::vector<Request*> slots;
  std::vector<Py_ssize_t> free_slots;
  Trie global;
  std::map<uint64_t, CachedResponse> cached;  // FIFO by key
  uint64_t next_key = 0;
  // scratch
  std::vector<int32_t> token_buf;
  std::vector<uint32_t> active_buf;
  std::vector<Candidate> heap;
  std::vector<uint32_t> children;
  DraftOut a, b;
};

// ------------------------------------------------------------------------- arithmetic as in Python

// math.ceil(factor * match_len + offset - _CEIL_SLACK), clamped to [0, cap] (tree.py's draft_limit).
long draft_limit(long match_len, long long cap, double factor, double offset) {
  const double by_match = std::ceil(factor * static_cast<double>(match_len) + offset - kCeilSlack);
  long long limit = cap;
  if (by_match < static_cast<double>(limit)) limit = static_cast<long long>(by_match);
  return limit < 0 ? 0 : static_cast<long>(limit);
}

// Python's built-in sum() over a list of floats: from 0 (int), so the first float is taken as is;
// plain left-to-right addition before 3.12, Neumaier compensated summation from 3.12 on.
double py_sum(const std::vector<double>& values) {
  if (values.empty()) return 0.0;
  double total = values[0];
#if PY_VERSION_HEX >= 0x030C0000
  double compensation = 0.0;
  for (size_t i = 1; i < values.size(); ++i) {
    const double x = values[i];
    const double t = total + x;
    if (std::fabs(total) >= std::fabs(x)) {
      compensation += (total - t) + x;
    } else {
      compensation += (x - t) + total;
    }
    total = t;
  }
  if (compensation != 0.0 && std::isfinite(compensation)) total += compensation;
#else
  for (size_t i = 1; i < values.size(); ++i) total += values[i];
#endif
  return total;
}

// ------------------------------------------------------------------------- drafts (tree.py)

// speculate_path: the most frequent child (ties: inserted first) while the path probability holds.
void speculate_path(const Trie& trie, uint32_t node, long limit, double min_token_prob, bool discount_self,
                    DraftOut& out) {
  out.tokens.clear();
  out.probs.clear();
  double prob = 1.0;
  long long denominator = static_cast<long long>(trie.count(node)) - (discount_self ? 1 : 0);
  while (static_cast<long>(out.tokens.size()) < limit && trie.has_children(node) && denominator > 0) {
    uint32_t best = NIL;
    uint32_t best_count = 0;
    for (uint32_t c = trie.node(node).first; c != NIL; c = trie.node(c).next) {
      const uint32_t count = trie.count(c);
      if (count >= best_count) {  // newest first: the last of equal counts is the oldest
        best = c;
        best_count = count;
      }
    }
    prob *= static_cast<double>(best_count) / static_cast<double>(denominator);
    if (prob < min_token_prob) break;
    out.tokens.push_back(trie.node(best).token);
    out.probs.push_back(prob);
    node = best;
    denominator = best_count;
  }
}

// speculate_tree: best-first expansion by path probability (ties: first pushed).
void speculate_tree(State& st, const Trie& trie, uint32_t node, long limit, long long max_nodes,
                    double min_token_prob, bool discount_self, DraftOut& out) {
  out.tokens.clear();
  out.parents.clear();
  out.probs.clear();
  if (limit <= 0 || max_nodes <= 0) return;
  std::vector<Candidate>& heap = st.heap;
  std::vector<uint32_t>& children = st.children;
  heap.clear();
  uint64_t order = 0;
  const CandidateLess less;
  auto push_children = [&](uint32_t parent_node, int32_t parent_index, double parent_prob, int32_t depth) {
    long long denominator = trie.count(parent_node);
    if (parent_index == -1 && discount_self) denominator -= 1;
    if (denominator <= 0 || depth >= limit) return;
    children.clear();
    for (uint32_t c = trie.node(parent_node).first; c != NIL; c = trie.node(c).next) children.push_back(c);
    for (size_t k = children.size(); k-- > 0;) {  // oldest first: dict order
      const uint32_t c = children[k];
      const double prob = parent_prob * static_cast<double>(trie.count(c)) / static_cast<double>(denominator);
      if (prob >= min_token_prob) {
        heap.push_back(Candidate{prob, order, parent_index, depth + 1, c, trie.node(c).token});
        std::push_heap(heap.begin(), heap.end(), less);
        ++order;
      }
    }
  };
  push_children(node, -1, 1.0, 0);
  while (!heap.empty() && static_cast<long long>(out.tokens.size()) < max_nodes) {
    std::pop_heap(heap.begin(), heap.end(), less);
    const Candidate top = heap.back();
    heap.pop_back();
    out.tokens.push_back(top.token);
    out.parents.push_back(top.parent);
    out.probs.push_back(top.prob);
    push_children(top.node, static_cast<int32_t>(out.tokens.size()) - 1, top.prob, top.depth);
  }
}

// tree.py's SuffixTree.match_sequence: binary search over the request's active nodes.
Match match_sequence(const Request& r, long max_len, int max_depth) {
  long limit = std::min(static_cast<long>(r.active.size()) - 1, static_cast<long>(max_depth) - 1);
  limit = std::min(limit, max_len);
  if (limit <= 0) return Match{0, 0};
  if (r.trie.has_children(r.active[limit])) return Match{r.active[limit], limit};
  long lo = 0, hi = limit - 1;
  while (lo < hi) {
    const long mid = (lo + hi + 1) / 2;
    if (r.trie.has_children(r.active[mid])) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return Match{r.active[lo], lo};
}

// tree.py's global_tree.match(tokens, max_match_len) for request r, from its kept state.
Match match_global(State& st, Request& r) {
  if (r.global_version != st.global.version()) {
    const Match m = st.global.longest_present(r.tokens.data(), r.tokens.size(), st.cfg.match_cap());
    r.global_node = m.node;
    r.global_length = m.length;
    r.global_version = st.global.version();
  }
  return st.global.with_continuation(Match{r.global_node, r.global_length});
}

// SuffixDecodingCache.speculate: the better greedy draft of the local and global tries.
void speculate(State& st, Request& r, long long cap, DraftOut& best) {
  const Config& cfg = st.cfg;
  const Match local = match_sequence(r, cfg.max_match_len(), cfg.max_depth);
  long limit = draft_limit(local.length, cap, cfg.max_spec_factor, cfg.max_spec_offset);
  speculate_path(r.trie, local.node, limit, cfg.min_token_prob, local.length > 0, best);
  if (!best.tokens.empty()) {
    best.score = py_sum(best.probs);
    best.match_len = local.length;
    best.source = kLocal;
  } else {
    best.probs.clear();
    best.score = 0.0;
    best.match_len = 0;
    best.source = kNone;
  }
  if (!st.cached.empty() && best.score < static_cast<double>(cap)) {
    const Match g = match_global(st, r);
    limit = draft_limit(g.length, cap, cfg.max_spec_factor, cfg.max_spec_offset);
    DraftOut& other = (&best == &st.a) ? st.b : st.a;
    speculate_path(st.global, g.node, limit, cfg.min_token_prob, false, other);
    if (!other.tokens.empty()) {
      const double score = py_sum(other.probs);
      if (score > best.score) {
        best.tokens.swap(other.tokens);
        best.probs.swap(other.probs);
        best.score = score;
        best.match_len = g.length;
        best.source = kGlobal;
      }
    }
  }
}

// SuffixDecodingCache.speculate_tree.
void speculate_tree_draft(State& st, Request& r, long long cap, long long budget, DraftOut& best) {
  const Config& cfg = st.cfg;
  best.tokens.clear();
  best.parents.clear();
  best.probs.clear();
  best.score = 0.0;
  best.match_len = 0;
  best.source = kNone;
  DraftOut& cand = st.b;
  const Match local = match_sequence(r, cfg.max_match_len(), cfg.max_depth);
  long limit = draft_limit(local.length, cap, cfg.max_spec_factor, cfg.max_spec_offset);
  speculate_tree(st, r.trie, local.node, limit, budget, cfg.min_token_prob, local.length > 0, cand);
  if (!cand.tokens.empty()) {
    const double score = py_sum(cand.probs);
    if (score > best.score) {
      std::swap(best.tokens, cand.tokens);
      std::swap(best.parents, cand.parents);
      std::swap(best.probs, cand.probs);
      best.score = score;
      best.match_len = local.length;
      best.source = kLocal;
    }
  }
  if (!st.cached.empty()) {
    const Match g = match_global(st, r);
    limit = draft_limit(g.length, cap, cfg.max_spec_factor, cfg.max_spec_offset);
    speculate_tree(st, st.global, g.node, limit, budget, cfg.min_token_prob, false, cand);
    if (!cand.tokens.empty()) {
      const double score = py_sum(cand.probs);
      if (score > best.score) {
        std::swap(best.tokens, cand.tokens);
        std::swap(best.parents, cand.parents);
        std::swap(best.probs, cand.probs);
        best.score = score;
        best.match_len = g.length;
        best.source = kGlobal;
      }
    }
  }
}

// ------------------------------------------------------------------------- the Python type

PyObject* str_local;
PyObject* str_global;
PyObject* str_none;
PyObject* str_token_ids;
PyObject* str_parents;
PyObject* str_probs;
PyObject* str_score;
PyObject* str_match_len;
PyObject* str_source;
PyObject* empty_tuple;

struct CacheObject {
  PyObject_HEAD
  State* st;
  PyObject* ids;         // req_id -> slot (int) of the active requests
  PyObject* cached_ids;  // req_id -> key (int) of its latest response in the global trie
  PyObject* draft_type;
  PyObject* tree_draft_type;
};

// A list or tuple with the items of any iterable (new reference; TypeError "'X' object is not
// iterable" like a Python for loop). Read it with the PySequence_Fast_* macros.
PyObject* as_fast(PyObject* iterable) {
  if (PyList_CheckExact(iterable) || PyTuple_CheckExact(iterable)) {
    Py_INCREF(iterable);
    return iterable;
  }
  return PySequence_List(iterable);
}

// Convert any sequence (or iterable) of ints to int32 tokens in `out`.
bool to_tokens(PyObject* seq, std::vector<int32_t>& out) {
  out.clear();
  PyObject* fast = as_fast(seq);
  if (fast == nullptr) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  try {
    out.resize(static_cast<size_t>(n));
  } catch (const std::bad_alloc&) {
    Py_DECREF(fast);
    PyErr_NoMemory();
    return false;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    const long value = PyLong_AsLong(items[i]);
    if (value == -1 && PyErr_Occurred()) {
      Py_DECREF(fast);
      return false;
    }
    if (value < INT32_MIN || value > INT32_MAX) {
      PyErr_Format(PyExc_OverflowError, "token id %ld does not fit in 32 bits (native suffix backend)", value);
      Py_DECREF(fast);
      return false;
    }
    out[static_cast<size_t>(i)] = static_cast<int32_t>(value);
  }
  Py_DECREF(fast);
  return true;
}

void set_key_error(PyObject* key) {
  PyObject* args = PyTuple_Pack(1, key);
  if (args != nullptr) {
    PyErr_SetObject(PyExc_KeyError, args);
    Py_DECREF(args);
  }
}

// The active request of `req_id`; KeyError (like the reference's dict lookup) if there is none.
Request* lookup(CacheObject* self, PyObject* req_id) {
  PyObject* slot = PyDict_GetItemWithError(self->ids, req_id);  // borrowed
  if (slot == nullptr) {
    if (!PyErr_Occurred()) set_key_error(req_id);
    return nullptr;
  }
  const Py_ssize_t i = PyLong_AsSsize_t(slot);
  if (i == -1 && PyErr_Occurred()) return nullptr;
  return self->st->slots[static_cast<size_t>(i)];
}

// None -> the configured cap; an int -> min(it, the configured cap).
bool parse_cap(PyObject* arg, long long configured, long long* out) {
  if (arg == nullptr || arg == Py_None) {
    *out = configured;
    return true;
  }
  int overflow = 0;
  long long value = PyLong_AsLongLongAndOverflow(arg, &overflow);
  if (value == -1 && PyErr_Occurred()) return false;
  if (overflow > 0) value = LLONG_MAX;
  if (overflow < 0) value = LLONG_MIN;
  *out = std::min(value, configured);
  return true;
}

PyObject* int_list(const std::vector<int32_t>& values) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(values.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < values.size(); ++i) {
    PyObject* item = PyLong_FromLong(values[i]);
    if (item == nullptr) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
  }
  return list;
}

PyObject* float_list(const std::vector<double>& values) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(values.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < values.size(); ++i) {
    PyObject* item = PyFloat_FromDouble(values[i]);
    if (item == nullptr) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
  }
  return list;
}

bool set_field(PyObject* obj, PyObject* name, PyObject* value) {  // steals `value`
  if (value == nullptr) return false;
  const int rc = PyObject_GenericSetAttr(obj, name, value);
  Py_DECREF(value);
  return rc == 0;
}

// A Draft / TreeDraft instance. Built like the dataclass's own __init__ does (object.__new__, then
// object.__setattr__ per field), without its Python-level call: the classes are plain frozen
// dataclasses with no __post_init__ (tree.py says so and a test checks it).
PyObject* make_draft(CacheObject* self, const DraftOut& d, bool tree) {
  PyTypeObject* type = reinterpret_cast<PyTypeObject*>(tree ? self->tree_draft_type : self->draft_type);
  PyObject* obj = type->tp_new(type, empty_tuple, nullptr);
  if (obj == nullptr) return nullptr;
  PyObject* source = d.source == kLocal ? str_local : d.source == kGlobal ? str_global : str_none;
  Py_INCREF(source);
  if (!set_field(obj, str_token_ids, int_list(d.tokens)) ||
      (tree && !set_field(obj, str_parents, int_list(d.parents))) ||
      !set_field(obj, str_probs, float_list(d.probs)) ||
      !set_field(obj, str_score, PyFloat_FromDouble(d.score)) ||
      !set_field(obj, str_match_len, PyLong_FromLong(d.match_len)) || !set_field(obj, str_source, source)) {
    Py_DECREF(obj);
    return nullptr;
  }
  return obj;
}

// Every entry point that may allocate runs its C++ part inside NATIVE_TRY ... NATIVE_CATCH: no C++
// exception crosses into Python. After a MemoryError the cache may hold a half-applied update.
#define NATIVE_TRY try {
#define NATIVE_CATCH                                                                       \
  }                                                                                        \
  catch (const std::bad_alloc&) {                                                          \
    return PyErr_NoMemory();                                                               \
  }                                                                                        \
  catch (const CapacityError& exc) {                                                       \
    PyErr_SetString(PyExc_OverflowError, exc.what());                                      \
    return nullptr;                                                                        \
  }                                                                                        \
  catch (...) {                                                                            \
    PyErr_SetString(PyExc_RuntimeError, "suffix native backend: unexpected C++ exception"); \
    return nullptr;                                                                        \
  }

bool check_nargs(const char* name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi) {
  if (nargs < lo || nargs > hi) {
    if (lo == hi) {
      PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments (%zd given)", name, lo, nargs);
    } else {
      PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd positional arguments (%zd given)", name, lo, hi,
                   nargs);
    }
    return false;
  }
  return true;
}

// ---- lifecycle

int Cache_traverse(CacheObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));  // a heap type
  Py_VISIT(self->ids);
  Py_VISIT(self->cached_ids);
  Py_VISIT(self->draft_type);
  Py_VISIT(self->tree_draft_type);
  if (self->st != nullptr) {
    for (auto& item : self->st->cached) Py_VISIT(item.second.req_id);
  }
  return 0;
}

int Cache_clear(CacheObject* self) {
  Py_CLEAR(self->ids);
  Py_CLEAR(self->cached_ids);
  Py_CLEAR(self->draft_type);
  Py_CLEAR(self->tree_draft_type);
  if (self->st != nullptr) {
    for (auto& item : self->st->cached) Py_CLEAR(item.second.req_id);
  }
  return 0;
}

void Cache_dealloc(CacheObject* self) {
  PyObject_GC_UnTrack(self);
  Cache_clear(self);
  delete self->st;
  self->st = nullptr;
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(reinterpret_cast<PyObject*>(self));
  Py_DECREF(type);  // a heap type
}

PyObject* Cache_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"max_depth",      "max_spec_tokens",     "max_spec_factor",
                                 "max_spec_offset", "min_token_prob",      "max_cached_requests",
                                 "draft_type",      "tree_draft_type",     nullptr};
  int max_depth = 0, max_spec_tokens = 0;
  double factor = 0, offset = 0, min_prob = 0;
  Py_ssize_t max_cached = 0;
  PyObject* draft_type = nullptr;
  PyObject* tree_draft_type = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "iidddnO!O!:Cache", const_cast<char**>(kwlist), &max_depth,
                                   &max_spec_tokens, &factor, &offset, &min_prob, &max_cached, &PyType_Type,
                                   &draft_type, &PyType_Type, &tree_draft_type)) {
    return nullptr;
  }
  if (max_depth < 2 || max_depth > 4096) {
    PyErr_Format(PyExc_ValueError, "max_depth: must be an integer in 2..4096, got %d", max_depth);
    return nullptr;
  }
  if (max_spec_tokens < 1 || max_spec_tokens > max_depth - 1) {
    PyErr_Format(PyExc_ValueError, "max_spec_tokens: must be an integer in 1..%d, got %d", max_depth - 1,
                 max_spec_tokens);
    return nullptr;
  }
  if (!std::isfinite(factor) || !std::isfinite(offset) || !std::isfinite(min_prob)) {
    PyErr_SetString(PyExc_ValueError, "max_spec_factor, max_spec_offset, min_token_prob: must be finite");
    return nullptr;
  }
  if (max_cached < 0) {
    PyErr_SetString(PyExc_ValueError, "max_cached_requests: must be >= 0");
    return nullptr;
  }
  CacheObject* self = reinterpret_cast<CacheObject*>(type->tp_alloc(type, 0));
  if (self == nullptr) return nullptr;
  self->st = nullptr;
  self->ids = PyDict_New();
  self->cached_ids = PyDict_New();
  Py_INCREF(draft_type);
  self->draft_type = draft_type;
  Py_INCREF(tree_draft_type);
  self->tree_draft_type = tree_draft_type;
  if (self->ids == nullptr || self->cached_ids == nullptr) {
    Py_DECREF(self);
    return nullptr;
  }
  try {
    self->st = new State(Config{max_depth, max_spec_tokens, factor, offset, min_prob, max_cached});
  } catch (const std::bad_alloc&) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  return reinterpret_cast<PyObject*>(self);
}

// ---- requests

PyObject* Cache_start_request(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("start_request", nargs, 2, 2)) return nullptr;
  PyObject* req_id = args[0];
  const int present = PyDict_Contains(self->ids, req_id);
  if (present < 0) return nullptr;
  if (present) {
    PyObject* repr = PyObject_Repr(req_id);
    if (repr == nullptr) return nullptr;
    PyErr_Format(PyExc_ValueError, "request %U is already active", repr);
    Py_DECREF(repr);
    return nullptr;
  }
  State& st = *self->st;
  if (!to_tokens(args[1], st.token_buf)) return nullptr;
  NATIVE_TRY
  std::unique_ptr<Request> r(new Request(st.pool, st.cfg.max_depth));
  r->tokens = st.token_buf;
  r->prompt_len = st.token_buf.size();
  r->trie.extend(r->active, st.token_buf.data(), st.token_buf.size());
  Py_ssize_t slot;
  if (!st.free_slots.empty()) {
    slot = st.free_slots.back();
  } else {
    st.slots.push_back(nullptr);
    st.free_slots.reserve(st.slots.size());  // stop_request's push_back never allocates
    slot = static_cast<Py_ssize_t>(st.slots.size()) - 1;
    st.free_slots.push_back(slot);
  }
  PyObject* index = PyLong_FromSsize_t(slot);
  if (index == nullptr) return nullptr;
  const int rc = PyDict_SetItem(self->ids, req_id, index);
  Py_DECREF(index);
  if (rc < 0) return nullptr;
  st.free_slots.pop_back();
  st.slots[static_cast<size_t>(slot)] = r.release();
  Py_RETURN_NONE;
  NATIVE_CATCH
}

bool add_tokens(CacheObject* self, PyObject* req_id, PyObject* tokens) {
  State& st = *self->st;
  if (lookup(self, req_id) == nullptr) return false;  // KeyError first, like the reference
  if (!to_tokens(tokens, st.token_buf)) return false;
  // Again: converting the tokens may have run Python code (__index__) that stopped the request.
  Request* r = lookup(self, req_id);
  if (r == nullptr) return false;
  r->trie.extend(r->active, st.token_buf.data(), st.token_buf.size());  // checks capacity first
  r->tokens.insert(r->tokens.end(), st.token_buf.begin(), st.token_buf.end());
  if (r->global_version == st.global.version()) {  // keep the global match up to date
    const long cap = st.cfg.match_cap();
    for (int32_t token : st.token_buf) st.global.advance(r->global_node, r->global_length, token, cap);
  }
  return true;
}

PyObject* Cache_add_tokens(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("add_tokens", nargs, 2, 2)) return nullptr;
  NATIVE_TRY
  if (!add_tokens(self, args[0], args[1])) return nullptr;
  Py_RETURN_NONE;
  NATIVE_CATCH
}

// Remove the oldest (or a given) cached response from the global trie.
void drop_cached(CacheObject* self, std::map<uint64_t, CachedResponse>::iterator it) {
  State& st = *self->st;
  st.global.remove(it->second.tokens.data(), it->second.tokens.size());
  PyObject* req_id = it->second.req_id;
  // Forget req_id -> key only if it still names this response (not a later one of the same id).
  if (req_id != nullptr) {
    PyObject* key = PyDict_GetItemWithError(self->cached_ids, req_id);
    if (key != nullptr && PyLong_AsUnsignedLongLong(key) == it->first) {
      if (PyDict_DelItem(self->cached_ids, req_id) < 0) PyErr_Clear();
    }
    if (PyErr_Occurred()) PyErr_Clear();  // a failing __eq__/__hash__ must not leak out of here
  }
  st.cached.erase(it);
  Py_XDECREF(req_id);
}

PyObject* Cache_stop_request(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("stop_request", nargs, 1, 2)) return nullptr;
  PyObject* req_id = args[0];
  int cache_response = 1;
  if (nargs == 2) {
    cache_response = PyObject_IsTrue(args[1]);
    if (cache_response < 0) return nullptr;
  }
  PyObject* slot_obj = PyDict_GetItemWithError(self->ids, req_id);
  if (slot_obj == nullptr) {
    if (!PyErr_Occurred()) set_key_error(req_id);
    return nullptr;
  }
  const Py_ssize_t slot = PyLong_AsSsize_t(slot_obj);
  if (slot == -1 && PyErr_Occurred()) return nullptr;
  if (PyDict_DelItem(self->ids, req_id) < 0) return nullptr;
  State& st = *self->st;
  std::unique_ptr<Request> r(st.slots[static_cast<size_t>(slot)]);
  st.slots[static_cast<size_t>(slot)] = nullptr;
  st.free_slots.push_back(slot);  // capacity reserved by start_request: no allocation
  if (!cache_response || r->tokens.size() <= r->prompt_len || st.cfg.max_cached_requests == 0) {
    Py_RETURN_NONE;
  }
  NATIVE_TRY
  CachedResponse resp;
  resp.tokens.assign(r->tokens.begin() + static_cast<std::ptrdiff_t>(r->prompt_len), r->tokens.end());
  resp.req_id = nullptr;
  r.reset();
  const uint64_t key = st.next_key++;
  st.active_buf.clear();
  st.active_buf.push_back(0);
  st.global.extend(st.active_buf, resp.tokens.data(), resp.tokens.size());
  auto it = st.cached.emplace(key, std::move(resp)).first;
  PyObject* key_obj = PyLong_FromUnsignedLongLong(key);
  if (key_obj == nullptr) return nullptr;
  const int rc = PyDict_SetItem(self->cached_ids, req_id, key_obj);
  Py_DECREF(key_obj);
  if (rc < 0) return nullptr;
  Py_INCREF(req_id);
  it->second.req_id = req_id;
  while (static_cast<Py_ssize_t>(st.cached.size()) > st.cfg.max_cached_requests) {
    drop_cached(self, st.cached.begin());
  }
  Py_RETURN_NONE;
  NATIVE_CATCH
}

PyObject* Cache_evict_response(CacheObject* self, PyObject* req_id) {
  PyObject* key_obj = PyDict_GetItemWithError(self->cached_ids, req_id);
  if (key_obj == nullptr) {
    if (PyErr_Occurred()) return nullptr;
    Py_RETURN_FALSE;
  }
  const unsigned long long key = PyLong_AsUnsignedLongLong(key_obj);
  if (PyErr_Occurred()) return nullptr;
  auto it = self->st->cached.find(key);
  if (it == self->st->cached.end()) {
    PyErr_SetString(PyExc_RuntimeError, "suffix native backend: cached response index out of step");
    return nullptr;
  }
  NATIVE_TRY
  drop_cached(self, it);
  Py_RETURN_TRUE;
  NATIVE_CATCH
}

// ---- drafts

PyObject* speculate_one(CacheObject* self, PyObject* req_id, long long cap) {
  Request* r = lookup(self, req_id);
  if (r == nullptr) return nullptr;
  State& st = *self->st;
  speculate(st, *r, cap, st.a);
  return make_draft(self, st.a, false);
}

PyObject* Cache_speculate(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("speculate", nargs, 1, 2)) return nullptr;
  long long cap;
  if (!parse_cap(nargs > 1 ? args[1] : nullptr, self->st->cfg.max_spec_tokens, &cap)) return nullptr;
  NATIVE_TRY
  return speculate_one(self, args[0], cap);
  NATIVE_CATCH
}

PyObject* Cache_speculate_tree(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("speculate_tree", nargs, 1, 3)) return nullptr;
  State& st = *self->st;
  long long cap, budget;
  if (!parse_cap(nargs > 1 ? args[1] : nullptr, st.cfg.max_spec_tokens, &cap)) return nullptr;
  if (nargs > 2 && args[2] != Py_None) {
    int overflow = 0;
    budget = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (budget == -1 && PyErr_Occurred()) return nullptr;
    if (overflow > 0) budget = LLONG_MAX;
    if (overflow < 0) budget = LLONG_MIN;
  } else {
    budget = st.cfg.max_spec_tokens;
  }
  Request* r = lookup(self, args[0]);
  if (r == nullptr) return nullptr;
  NATIVE_TRY
  speculate_tree_draft(st, *r, cap, budget, st.a);
  return make_draft(self, st.a, true);
  NATIVE_CATCH
}

// One (req_id, token_ids) pair of an updates iterable, as a new reference to a 2-tuple (or nullptr
// with the exception the reference's `for req_id, token_ids in updates` would raise).
PyObject* unpack_update(PyObject* pair) {
  if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
    Py_INCREF(pair);
    return pair;
  }
  PyObject* tuple = PySequence_Tuple(pair);
  if (tuple == nullptr) {
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object", Py_TYPE(pair)->tp_name);
    }
    return nullptr;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(tuple);
  if (n != 2) {
    Py_DECREF(tuple);
    if (n < 2) {
      PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %zd)", n);
    } else {
      PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
    }
    return nullptr;
  }
  return tuple;
}

// add_tokens_batch(updates), speculate_batch(req_ids, max_spec_tokens) and
// add_tokens_and_speculate(updates, max_spec_tokens): each item in order; a list of Drafts (None for
// add_tokens_batch).
enum class Batch { kAdd, kSpeculate, kAddAndSpeculate };

PyObject* batch(CacheObject* self, PyObject* items, PyObject* cap_arg, Batch kind) {
  long long cap = 0;
  if (kind != Batch::kAdd && !parse_cap(cap_arg, self->st->cfg.max_spec_tokens, &cap)) return nullptr;
  PyObject* fast = as_fast(items);
  if (fast == nullptr) return nullptr;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject* out = kind == Batch::kAdd ? Py_None : PyList_New(n);
  Py_XINCREF(kind == Batch::kAdd ? out : nullptr);
  PyObject* pair = nullptr;
  if (out == nullptr) goto fail;
  try {
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
      PyObject* req_id = item;
      if (kind != Batch::kSpeculate) {
        pair = unpack_update(item);
        if (pair == nullptr) goto fail;
        req_id = PyTuple_GET_ITEM(pair, 0);
        if (!add_tokens(self, req_id, PyTuple_GET_ITEM(pair, 1))) goto fail;
      }
      if (kind != Batch::kAdd) {
        PyObject* draft = speculate_one(self, req_id, cap);
        if (draft == nullptr) goto fail;
        PyList_SET_ITEM(out, i, draft);
      }
      Py_CLEAR(pair);
    }
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    goto fail;
  } catch (const CapacityError& exc) {
    PyErr_SetString(PyExc_OverflowError, exc.what());
    goto fail;
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "suffix native backend: unexpected C++ exception");
    goto fail;
  }
  Py_DECREF(fast);
  return out;
fail:
  Py_XDECREF(pair);
  Py_DECREF(fast);
  Py_XDECREF(out);
  return nullptr;
}

PyObject* Cache_add_tokens_batch(CacheObject* self, PyObject* updates) {
  return batch(self, updates, nullptr, Batch::kAdd);
}

PyObject* Cache_speculate_batch(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("speculate_batch", nargs, 1, 2)) return nullptr;
  return batch(self, args[0], nargs > 1 ? args[1] : nullptr, Batch::kSpeculate);
}

PyObject* Cache_add_tokens_and_speculate(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("add_tokens_and_speculate", nargs, 1, 2)) return nullptr;
  return batch(self, args[0], nargs > 1 ? args[1] : nullptr, Batch::kAddAndSpeculate);
}

// ---- queries

PyObject* Cache_tokens(CacheObject* self, PyObject* req_id) {
  Request* r = lookup(self, req_id);
  if (r == nullptr) return nullptr;
  return int_list(r->tokens);
}

PyObject* Cache_active_requests(CacheObject* self, PyObject*) { return PyFrozenSet_New(self->ids); }

PyObject* Cache_num_cached_responses(CacheObject* self, PyObject*) {
  return PyLong_FromSize_t(self->st->cached.size());
}

PyObject* Cache_memory(CacheObject* self, PyObject*) {
  const State& st = *self->st;
  size_t local_trees = 0, local_nodes = 0;
  size_t bytes = sizeof(State) + st.pool.resident_bytes() + st.global.overhead_bytes();
  for (const Request* r : st.slots) {
    if (r == nullptr) continue;
    ++local_trees;
    local_nodes += r->trie.num_nodes();
    bytes += r->bytes();
  }
  bytes += st.slots.capacity() * sizeof(Request*) + st.free_slots.capacity() * sizeof(Py_ssize_t);
  for (const auto& item : st.cached) {
    bytes += sizeof(item) + 32 + item.second.tokens.capacity() * sizeof(int32_t);  // 32: the map's links
  }
  return Py_BuildValue("(nnnnnnn)", static_cast<Py_ssize_t>(local_trees), static_cast<Py_ssize_t>(local_nodes),
                       static_cast<Py_ssize_t>(st.cached.size()), static_cast<Py_ssize_t>(st.global.root_count()),
                       static_cast<Py_ssize_t>(st.global.num_nodes()), static_cast<Py_ssize_t>(sizeof(Node)),
                       static_cast<Py_ssize_t>(bytes));
}

PyMethodDef Cache_methods[] = {
    {"start_request", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_start_request)),
     METH_FASTCALL, "start_request(req_id, prompt_ids, /)"},
    {"add_tokens", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_add_tokens)),
     METH_FASTCALL, "add_tokens(req_id, token_ids, /)"},
    {"add_tokens_batch", reinterpret_cast<PyCFunction>(Cache_add_tokens_batch), METH_O,
     "add_tokens_batch(updates, /)"},
    {"stop_request", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_stop_request)),
     METH_FASTCALL, "stop_request(req_id, cache_response=True, /)"},
    {"evict_response", reinterpret_cast<PyCFunction>(Cache_evict_response), METH_O,
     "evict_response(req_id, /) -> bool"},
    {"speculate", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_speculate)),
     METH_FASTCALL, "speculate(req_id, max_spec_tokens=None, /) -> Draft"},
    {"speculate_batch", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_speculate_batch)),
     METH_FASTCALL, "speculate_batch(req_ids, max_spec_tokens=None, /) -> list[Draft]"},
    {"add_tokens_and_speculate",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_add_tokens_and_speculate)),
     METH_FASTCALL, "add_tokens_and_speculate(updates, max_spec_tokens=None, /) -> list[Draft]"},
    {"speculate_tree", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_speculate_tree)),
     METH_FASTCALL, "speculate_tree(req_id, max_spec_tokens=None, max_nodes=None, /) -> TreeDraft"},
    {"tokens", reinterpret_cast<PyCFunction>(Cache_tokens), METH_O, "tokens(req_id, /) -> list[int]"},
    {"active_requests", reinterpret_cast<PyCFunction>(Cache_active_requests), METH_NOARGS,
     "active_requests() -> frozenset"},
    {"num_cached_responses", reinterpret_cast<PyCFunction>(Cache_num_cached_responses), METH_NOARGS,
     "num_cached_responses() -> int"},
    {"memory", reinterpret_cast<PyCFunction>(Cache_memory), METH_NOARGS,
     "memory() -> (local_trees, local_nodes, cached_responses, cached_tokens, global_nodes, "
     "bytes_per_node, allocated_bytes)"},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot Cache_slots[] = {
    {Py_tp_doc, const_cast<char*>("The whole suffix decoding cache in C++ (see arctic_runtime.suffix).")},
    {Py_tp_new, reinterpret_cast<void*>(Cache_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Cache_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(Cache_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(Cache_clear)},
    {Py_tp_methods, Cache_methods},
    {0, nullptr},
};

PyType_Spec Cache_spec = {
    "arctic_runtime.suffix._native.Cache",
    static_cast<int>(sizeof(CacheObject)),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    Cache_slots,
};

PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "arctic_runtime.suffix._native",
    "Native (C++) backend of arctic_runtime.suffix.SuffixDecodingCache; use that class, not this module.",
    -1,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

PyObject* intern(const char* text) { return PyUnicode_InternFromString(text); }

}  // namespace

PyMODINIT_FUNC PyInit__native(void) {
  str_local = intern("local");
  str_global = intern("global");
  str_none = intern("none");
  str_token_ids = intern("token_ids");
  str_parents = intern("parents");
  str_probs = intern("probs");
  str_score = intern("score");
  str_match_len = intern("match_len");
  str_source = intern("source");
  empty_tuple = PyTuple_New(0);
  if (!str_local || !str_global || !str_none || !str_token_ids || !str_parents || !str_probs || !str_score ||
      !str_match_len || !str_source || !empty_tuple) {
    return nullptr;
  }

  PyObject* module = PyModule_Create(&native_module);
  if (module == nullptr) return nullptr;
  PyObject* cache_type = PyType_FromSpec(&Cache_spec);
  if (cache_type == nullptr || PyModule_AddObject(module, "Cache", cache_type) < 0) {
    Py_XDECREF(cache_type);
    Py_DECREF(module);
    return nullptr;
  }
  if (PyModule_AddIntConstant(module, "BYTES_PER_NODE", static_cast<long>(sizeof(Node))) < 0 ||
      PyModule_AddIntConstant(module, "SCAN_LIMIT", static_cast<long>(kScanLimit)) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
