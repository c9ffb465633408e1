// Native backend of suffix decoding: the whole SuffixDecodingCache of tree.py in C++17 on the plain
// CPython C API. Results are identical to the pure-Python reference (same drafts, same float
// arithmetic in the same order, same tie-breaking, same node counts); tests/unit/test_suffix_native.py
// checks that against the reference with random operations.
//
// Layout. A node record is 20 bytes: token, count, newest child, next older sibling, stamp (the trie's
// clock at the node's latest increment: the clock moves on by one per appended token, so siblings
// never share a stamp and the greedy draft's tie-break, "most recently incremented", is the highest
// stamp). A node's children form a singly linked list, newest first: the reference's dict order is
// the list backwards, which the tree draft walks (its last tie-break is push order). A child is
// found by scanning the list while it is short; a node with more than kScanLimit children also has
// them in the trie's open-addressing hash table keyed by (parent, token) (marked by the top bit of
// its count). Stamps are 32 bits: before the clock would pass 2**32 - 1 (billions of tokens through
// one global trie), all stamps are renumbered 1..k in their order, which changes no comparison.
//
// Tails (see Trie). A trie keeps its sequences' tokens, and a unique path (a suffix that occurs once,
// from the depth where it first left the trie down to max_depth) is one record, a tail head, whose
// nodes below are implicit and read from the tokens. New text (most tokens, most depths) then costs
// no node at all; a second occurrence turns the head into a plain node, the next one into the head.
//
// Memory. Records live in 40 KB chunks (2048 records) handed out by one pool per cache, carved from
// 2 MB slabs that are asked for as transparent huge pages: one page fault per 2 MB instead of one
// per 4 KB, and a finished request's chunks are reused by the next ones without faulting again.
// Idle chunks beyond one slab more than are in use are given back to the OS (madvise DONTNEED).
// Each request has its own local trie (its chunks go back to the pool when it stops), holding its
// prompt + output. The global trie (responses of running requests, inserted as their tokens arrive,
// and of finished ones) also keeps, per record, the previous sibling (O(1) unlink when a removal
// deletes a record; deleted records go on a free list and are reused) and the suffix link (the node
// of the path minus its first token), both in pool chunks too.
//
// Matching (tree.py's best_over_lengths). Every match length is scored, from the longest down. In
// the local trie the node of each length is the request's active node at that depth. In the global
// trie the nodes of the suffixes within the request's live response are its active nodes there;
// when the response is shorter than the longest length allowed, the longest suffix of the context
// that occurs is found in one left-to-right pass over the last max_match_len tokens with suffix
// links (matching statistics), and shorter lengths follow suffix links: the node of the last L - 1
// tokens is the suffix link of the node of the last L.
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
constexpr double kBoundSlack = 1e-9;          // speculate_path: the rounding margin of its score bound
constexpr uint32_t kStampMax = 0xFFFFFFFFu;   // the clock is renumbered before it passes this

inline void prefetch(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

struct Node {
  int32_t token;
  uint32_t count;  // occurrences | kHashed
  uint32_t first;  // newest child, NIL if none
  uint32_t next;   // next older sibling (on the free list: the next free node)
  uint32_t stamp;  // the trie's clock at the latest increment of count
};
static_assert(sizeof(Node) == 20, "Node is 20 bytes");

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

constexpr size_t kHugePage = size_t{2} << 20;  // 2 MB: one transparent huge page

// `bytes` (a multiple of kHugePage) of zeroed memory, 2 MB aligned and asked for as transparent huge
// pages: one page fault and one TLB entry per 2 MB.
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
#else
void* alloc_huge(size_t bytes) {
  void* p = std::calloc(bytes, 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void free_huge(void* p, size_t) { std::free(p); }
#endif

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
    if (size_ != 0) ::prefetch(&slots_[mix(parent, token) & mask_]);
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

constexpr uint32_t kTailTag = 0x80000000u;       // in Node::first of a tail head: kTailTag | tail id
constexpr uint32_t kVirtual = 0xFFFFFFFEu;       // in an active list: the node is in that suffix's own tail
constexpr uint32_t kMaxRecords = kTailTag - 16;  // record indices stay below kTailTag

// A trie node as drafting and matching see it: the record `node` (depth 0), or the implicit node at
// `depth` in the tail whose head record is `node`.
struct Ref {
  uint32_t node;
  uint32_t depth;
};

struct Match {
  Ref node;
  long length;
};

// A trie of every suffix (truncated at max_depth) of the sequences inserted, with counts and stamps;
// see tree.py's SuffixTree. A local trie holds one sequence (a request's prompt + output), the global
// trie many (responses, live and finished); the trie keeps each sequence's tokens and, per token, the
// clock when it came (its stamp). `global` tries also keep previous siblings and suffix links (removal,
// matching).
//
// Tails. Most suffixes of new text are unique after a few tokens: inserted node by node they would
// cost a new node per depth per token. Instead, when a suffix of sequence S starting at s first leaves
// the trie at depth d0 (no child for its next token), one record is created there, a *tail head*: count
// 1, `first` = kTailTag | the id of a Tail entry {S, s, d0, parent record}. The nodes below it on the
// suffix's path, S[s .. s + d) for d0 < d <= min(max_depth, len(S) - s), are implicit: count 1, one
// child (S's next token), stamp S.stamps[s + d - 1] (a head's stamp is found the same way), so appending
// a token to S extends each of its open tails without touching memory. When another occurrence walks
// into a tail head, the head becomes a plain node counted twice and the tail's next implicit node (if
// any) its new head. Plain nodes are created only that way (and the root), so a plain node's suffix
// link is always a plain node; a tail node's is found from its head's parent's. Counts, stamps and
// node counts (records + implicit nodes) are exactly the reference trie's; only the storage differs.
class Trie {
 public:
  struct Seq {
    std::vector<int32_t> tokens;
    std::vector<uint32_t> stamps;  // stamps[i]: the clock when tokens[i] was appended
    // While the sequence may grow: active[d] is the node of its last d tokens, d < max_depth (kVirtual:
    // in that suffix's own tail). Empty once closed.
    std::vector<uint32_t> active;
  };
  struct Tail {
    uint32_t seq;
    uint32_t start;
    uint32_t depth;   // of the head
    uint32_t parent;  // the head's parent: a plain record
  };

  Trie(NodePool& pool, int max_depth, bool global)
      : pool_(pool), max_depth_(max_depth), global_(global), prev_(pool), slink_(pool) {
    reset_nodes();
  }
  Trie(const Trie&) = delete;
  Trie& operator=(const Trie&) = delete;
  ~Trie() { release_nodes(); }

  // ---- sequences

  uint32_t add_sequence() {
    uint32_t id;
    if (!free_seqs_.empty()) {
      id = free_seqs_.back();
      free_seqs_.pop_back();
    } else {
      free_seqs_.reserve(seqs_.size() + 1);  // remove() never allocates
      seqs_.emplace_back();
      id = static_cast<uint32_t>(seqs_.size() - 1);
    }
    seqs_[id].active.assign(1, 0);  // the root
    return id;
  }
  // The sequence will not grow any more: its active nodes are not needed.
  void close(uint32_t seq) { std::vector<uint32_t>().swap(seqs_[seq].active); }
  const std::vector<int32_t>& tokens(uint32_t seq) const { return seqs_[seq].tokens; }
  const std::vector<uint32_t>& active(uint32_t seq) const { return seqs_[seq].active; }

  // ---- sizes

  size_t num_nodes() const { return num_nodes_ + implicit_; }  // as the reference counts them
  uint32_t root_count() const { return count(0); }
  // Bytes held besides the node chunks (those are the pool's): chunk table, link chunk tables, hash
  // table, sequences, tails, scratch.
  size_t overhead_bytes() const {
    size_t bytes = chunks_.capacity() * sizeof(Node*) + prev_.bytes() + slink_.bytes() + map_.bytes() +
                   stack_.capacity() * sizeof(uint32_t) + created_.capacity() * sizeof(Created) +
                   tails_.capacity() * sizeof(Tail) + free_tails_.capacity() * sizeof(uint32_t) +
                   seqs_.capacity() * sizeof(Seq) + free_seqs_.capacity() * sizeof(uint32_t);
    for (const Seq& s : seqs_) {
      bytes += (s.tokens.capacity() + s.stamps.capacity() + s.active.capacity()) * sizeof(uint32_t);
    }
    return bytes;
  }

  // ---- records

  const Node& node(uint32_t i) const { return chunks_[i >> NodePool::kShift][i & (NodePool::kChunkNodes - 1)]; }
  uint32_t count(uint32_t i) const { return node(i).count & kCountMask; }
  bool is_head(uint32_t i) const {
    const uint32_t first = node(i).first;
    return first != NIL && (first & kTailTag) != 0;
  }
  uint32_t record_stamp(uint32_t i) const {
    const Node& n = node(i);
    if (n.first == NIL || (n.first & kTailTag) == 0) return n.stamp;
    const Tail& t = tails_[n.first & ~kTailTag];
    return seqs_[t.seq].stamps[t.start + t.depth - 1];
  }

  uint32_t find_child(uint32_t parent, int32_t token) const {
    const Node& p = node(parent);
    if (p.count & kHashed) return map_.find(parent, token);
    for (uint32_t c = p.first; c != NIL; c = node(c).next) {
      if (node(c).token == token) return c;
    }
    return NIL;
  }

  // ---- any node (Ref)

  bool in_tail(Ref r) const { return r.depth != 0 || is_head(r.node); }
  uint32_t ref_count(Ref r) const { return r.depth != 0 ? 1 : count(r.node); }
  // The only child of a tail node (its sequence's next token), if the tail goes on below it.
  bool tail_child(Ref r, Ref& child, int32_t& token, uint32_t& stamp) const {
    const Tail& t = tails_[node(r.node).first & ~kTailTag];
    const Seq& s = seqs_[t.seq];
    const size_t depth = r.depth != 0 ? r.depth : t.depth;
    if (depth >= static_cast<size_t>(max_depth_) || t.start + depth >= s.tokens.size()) return false;
    child = Ref{r.node, static_cast<uint32_t>(depth + 1)};
    token = s.tokens[t.start + depth];
    stamp = s.stamps[t.start + depth];
    return true;
  }
  bool has_children(Ref r) const {
    if (!in_tail(r)) return node(r.node).first != NIL;
    Ref child{NIL, 0};
    int32_t token;
    uint32_t stamp;
    return tail_child(r, child, token, stamp);
  }
  // The child of `r` for `token`; node NIL if none.
  Ref child_of(Ref r, int32_t token) const {
    if (in_tail(r)) {
      Ref child{NIL, 0};
      int32_t next;
      uint32_t stamp;
      if (tail_child(r, child, next, stamp) && next == token) return child;
      return Ref{NIL, 0};
    }
    return Ref{find_child(r.node, token), 0};
  }

  // The node of `r`'s path less its first token (global tries; `r` is not the root). A plain node's is
  // stored. A tail node's: the head's parent's link, then down the rest of the path, which is short
  // and ends at once in another tail where it enters one.
  Ref suffix_link(Ref r) const {
    if (!in_tail(r)) return Ref{slink_[r.node], 0};
    const Tail& t = tails_[node(r.node).first & ~kTailTag];
    const Seq& s = seqs_[t.seq];
    const size_t depth = r.depth != 0 ? r.depth : t.depth;  // the result has depth - 1 tokens
    Ref cur{0, 0};
    size_t cur_depth = 0;
    if (t.depth >= 2) {
      cur = Ref{slink_[t.parent], 0};
      cur_depth = t.depth - 2;
    }
    for (size_t i = t.start + 1 + cur_depth; i < t.start + depth; ++i) {
      if (in_tail(cur)) {  // the rest of the path is that tail's
        const size_t base = cur.depth != 0 ? cur.depth : tails_[node(cur.node).first & ~kTailTag].depth;
        return Ref{cur.node, static_cast<uint32_t>(base + (t.start + depth - i))};
      }
      cur = Ref{find_child(cur.node, s.tokens[i]), 0};
    }
    return cur;
  }

  // CapacityError unless `n` more tokens fit (the root's count is the number of tokens).
  void check_room(size_t n) const {
    if (n > static_cast<size_t>(kCountMask - count(0))) {
      throw CapacityError("a suffix trie cannot hold more than 2**31 - 1 tokens");
    }
  }

  // Tests: move the clock on to `value` (never back), so that the renumbering runs soon.
  void advance_clock(uint32_t value) { clock_ = std::max(clock_, value); }

  // Ask for a sequence's active nodes' cache lines (they were last touched an engine step ago), so
  // that they arrive while the caller does other work before extend().
  void prefetch_active(uint32_t seq) const {
    for (uint32_t a : seqs_[seq].active) {
      if (a != kVirtual) prefetch(&node(a));
    }
  }

  // Append `tokens` to sequence `seq` (not closed).
  void extend(uint32_t seq_id, const int32_t* tokens, size_t n) {
    check_room(n);
    Seq& seq = seqs_[seq_id];
    std::vector<uint32_t>& active = seq.active;
    const size_t total = seq.tokens.size() + n;
    if (seq.tokens.capacity() < total) seq.tokens.reserve(std::max(total, 2 * seq.tokens.capacity()));
    if (seq.stamps.capacity() < total) seq.stamps.reserve(std::max(total, 2 * seq.stamps.capacity()));
    const size_t max_depth = static_cast<size_t>(max_depth_);
    for (size_t k = 0; k < n; ++k) {
      const int32_t token = tokens[k];
      if (clock_ == kStampMax) renumber_stamps();
      const uint32_t stamp = ++clock_;
      const size_t pos = seq.tokens.size();
      seq.tokens.push_back(token);
      seq.stamps.push_back(stamp);
      at(0).count += 1;
      const size_t depth = active.size();
      if (depth < max_depth) active.push_back(0);  // else: depth max_depth is never extended
      uint32_t* const act = active.data();
      const size_t kept = active.size();
      created_.clear();
      // Deepest first: a tail that a shallower suffix walks into has been extended already, and
      // act[d + 1] has been stepped when act[d]'s suffix overwrites it.
      // The deepest suffixes are the ones in their own tails (kVirtual): a suffix that occurs once
      // makes every longer one occur once, so act[0..depth) is real nodes, then kVirtual only. Each
      // of those grows by an implicit node and stays virtual: one step for all of them, their
      // boundary found by bisection, instead of a loop turn each (most suffixes of fresh text).
      size_t lo = 0;
      for (size_t hi = depth; lo < hi;) {
        const size_t mid = (lo + hi) / 2;
        if (act[mid] == kVirtual) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      if (lo < depth) {
        implicit_ += depth - lo;
        if (depth < kept) act[depth] = kVirtual;  // the deepest one's successor; the rest are already
      }
      for (size_t d = lo; d-- > 0;) {
        const uint32_t parent = act[d];
        Node& p = at(parent);
        uint32_t child = NIL;
        uint32_t siblings = 0;
        if (p.first == NIL) {
        } else if (p.count & kHashed) {
          child = map_.find(parent, token);
        } else {
          for (child = p.first; child != NIL; child = node(child).next, ++siblings) {
            if (node(child).token == token) break;
          }
        }
        if (child == NIL) {  // the suffix leaves the trie: a new tail
          const uint32_t id = new_tail(Tail{seq_id, static_cast<uint32_t>(pos - d), static_cast<uint32_t>(d + 1), parent});
          child = add_child(parent, p, token, siblings);
          Node& head = at(child);
          head.count = 1;
          head.first = kTailTag | id;
          if (d + 1 < kept) act[d + 1] = kVirtual;
          continue;
        }
        if (node(child).first != NIL && (node(child).first & kTailTag) != 0) {
          split(child, stamp);
          if (global_) created_.push_back(Created{child, static_cast<uint32_t>(d)});
        } else {
          Node& c = at(child);
          c.count += 1;
          c.stamp = stamp;
        }
        if (d + 1 < kept) act[d + 1] = child;
      }
      // A new plain node's suffix link: the new active node one level up (act[0] is the root). Its
      // path occurs at least twice, so that node is plain too.
      for (const Created& c : created_) slink_[c.node] = act[c.parent_depth];
    }
  }

  // Take out sequence `seq`'s counts, nodes and tails, and forget it (global tries); tree.py's remove().
  void remove(uint32_t seq_id) {
    Seq& seq = seqs_[seq_id];
    const size_t n = seq.tokens.size();
    const int32_t* tokens = seq.tokens.data();
    at(0).count -= static_cast<uint32_t>(n);
    const size_t max_depth = static_cast<size_t>(max_depth_);
    for (size_t start = 0; start < n; ++start) {
      const size_t end = std::min(start + max_depth, n);
      uint32_t parent = 0;
      for (size_t i = start; i < end; ++i) {
        const uint32_t child = find_child(parent, tokens[i]);
        if (child == NIL) break;  // cannot happen while the counts are consistent
        if (is_head(child)) {     // this suffix's own tail (no other path goes through a tail)
          unlink(parent, child);
          free_subtree(child);
          break;
        }
        at(child).count -= 1;
        if (count(child) == 0) {
          unlink(parent, child);
          free_subtree(child);  // what hangs below is only the rest of this suffix
          break;
        }
        parent = child;
      }
    }
    std::vector<int32_t>().swap(seq.tokens);
    std::vector<uint32_t>().swap(seq.stamps);
    std::vector<uint32_t>().swap(seq.active);
    free_seqs_.push_back(seq_id);  // room reserved by add_sequence
    if (num_nodes_ == 0 && count(0) == 0) reset_nodes();  // empty: give the memory back
  }

  // Matching (global tries). advance() appends one token to a context whose longest suffix of at most
  // `cap` tokens found in the trie is (node, length), keeping that invariant.
  void advance(Ref& node_ref, long& length, int32_t token, long cap) const {
    for (;;) {
      const Ref child = child_of(node_ref, token);
      if (child.node != NIL) {
        node_ref = child;
        ++length;
        break;
      }
      if (length == 0) return;
      node_ref = suffix_link(node_ref);
      --length;
    }
    if (length > cap) {
      node_ref = suffix_link(node_ref);
      --length;
    }
  }

  // The longest suffix of context[0..n) of at most `cap` tokens found in the trie.
  Match longest_present(const int32_t* context, size_t n, long cap) const {
    Match m{Ref{0, 0}, 0};
    const long limit = std::min(static_cast<long>(n), cap);
    if (limit <= 0) return m;
    for (size_t i = n - static_cast<size_t>(limit); i < n; ++i) advance(m.node, m.length, context[i], cap);
    return m;
  }

 private:
  struct Created {
    uint32_t node;
    uint32_t parent_depth;
  };

  Node& at(uint32_t i) { return chunks_[i >> NodePool::kShift][i & (NodePool::kChunkNodes - 1)]; }

  void reset_nodes() {
    release_nodes();
    size_ = 0;
    free_head_ = NIL;
    num_nodes_ = 0;
    implicit_ = 0;
    clock_ = 0;  // no stamp is left to compare with (every sequence left is empty)
    append(Node{0, 0, NIL, NIL, 0});  // the root
  }

  void release_nodes() {
    for (Node* chunk : chunks_) pool_.put(chunk);
    std::vector<Node*>().swap(chunks_);
    prev_.release();
    slink_.release();
    map_.release();
    std::vector<uint32_t>().swap(stack_);
    std::vector<Created>().swap(created_);
    std::vector<Tail>().swap(tails_);
    std::vector<uint32_t>().swap(free_tails_);
  }

  uint32_t new_tail(const Tail& t) {
    if (!free_tails_.empty()) {
      const uint32_t id = free_tails_.back();
      free_tails_.pop_back();
      tails_[id] = t;
      return id;
    }
    if (tails_.size() >= kTailTag - 1) throw CapacityError("a suffix trie cannot hold more tails");
    free_tails_.reserve(tails_.size() + 1);  // free_tail never allocates
    tails_.push_back(t);
    return static_cast<uint32_t>(tails_.size() - 1);
  }
  void free_tail(uint32_t id) { free_tails_.push_back(id); }

  size_t tail_end(const Tail& t) const {  // the depth of the tail's deepest node
    return std::min(static_cast<size_t>(max_depth_), seqs_[t.seq].tokens.size() - t.start);
  }

  // A second occurrence reaches tail head `h` (its own sequence already extended by the current token,
  // if it is the sequence being extended): it becomes a plain node counted twice, and the tail's next
  // implicit node, if any, its new head.
  void split(uint32_t h, uint32_t stamp) {
    const uint32_t id = node(h).first & ~kTailTag;
    const Tail t = tails_[id];
    const size_t end = tail_end(t);
    Node& head = at(h);
    head.count = 2;
    head.stamp = stamp;
    head.first = NIL;
    if (end > t.depth) {
      const uint32_t c = add_child(h, head, seqs_[t.seq].tokens[t.start + t.depth], 0);
      Node& next = at(c);
      next.count = 1;
      next.first = kTailTag | id;
      tails_[id].depth = t.depth + 1;
      tails_[id].parent = h;
      --implicit_;  // that node is a record now
    } else {
      // The head was the tail's only node: the end of its sequence's suffix. If that sequence is still
      // growing (another one reached its tail), the suffix's active node is this record from now on.
      free_tail(id);
      std::vector<uint32_t>& owner = seqs_[t.seq].active;
      if (t.depth < owner.size()) owner[t.depth] = h;
    }
  }

  // Give the stamps the values 1..k in the same order (equal stamps stay equal) and set the clock to
  // k: no comparison between stamps changes. Once per ~4 billion tokens at most.
  void renumber_stamps() {
    std::vector<uint32_t> stamps;
    for (const Seq& s : seqs_) stamps.insert(stamps.end(), s.stamps.begin(), s.stamps.end());
    // Free records have count 0; a tail head's stamp is its sequence's.
    for (uint32_t i = 1; i < size_; ++i) {
      if (count(i) != 0 && !is_head(i)) stamps.push_back(node(i).stamp);
    }
    std::sort(stamps.begin(), stamps.end());
    stamps.erase(std::unique(stamps.begin(), stamps.end()), stamps.end());
    if (stamps.size() >= kStampMax) throw CapacityError("a suffix trie ran out of 32-bit stamps");
    auto rank = [&stamps](uint32_t stamp) {
      return static_cast<uint32_t>(std::lower_bound(stamps.begin(), stamps.end(), stamp) - stamps.begin()) + 1;
    };
    for (uint32_t i = 1; i < size_; ++i) {
      if (count(i) != 0 && !is_head(i)) at(i).stamp = rank(node(i).stamp);
    }
    for (Seq& s : seqs_) {
      for (uint32_t& stamp : s.stamps) stamp = rank(stamp);
    }
    clock_ = static_cast<uint32_t>(stamps.size());
  }

  // A fresh record slot at the end (node chunks and link arrays grow a chunk at a time).
  uint32_t append(const Node& value) {
    if ((size_ & (NodePool::kChunkNodes - 1)) == 0) add_chunk();
    const uint32_t i = static_cast<uint32_t>(size_++);
    at(i) = value;
    return i;
  }

  void add_chunk() {
    if (size_ >= kMaxRecords) throw CapacityError("a suffix trie cannot hold more than 2**31 - 16 node records");
    chunks_.reserve(chunks_.size() + 1);
    if (global_) {
      prev_.ensure(size_ + NodePool::kChunkNodes);
      slink_.ensure(size_ + NodePool::kChunkNodes);
    }
    chunks_.push_back(pool_.get());
  }

  // A new child record of `parent` (whose record is `p`) for `token`, newest in its sibling list;
  // `siblings`: how many children it had (it joins the hash table past kScanLimit).
  uint32_t add_child(uint32_t parent, Node& p, int32_t token, uint32_t siblings) {
    const uint32_t old_first = p.first;
    uint32_t child;
    if (free_head_ != NIL) {
      child = free_head_;
      free_head_ = node(child).next;
      at(child) = Node{token, 0, NIL, old_first, 0};
    } else {
      child = append(Node{token, 0, NIL, old_first, 0});
    }
    ++num_nodes_;
    p.first = child;
    if (global_) {  // a plain node's suffix link is set by extend()
      prev_[child] = NIL;
      if (old_first != NIL) prev_[old_first] = child;
    }
    if (p.count & kHashed) {
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

  // Free `top` and every record below it (tails: their implicit nodes go too).
  void free_subtree(uint32_t top) {
    stack_.clear();
    stack_.push_back(top);
    while (!stack_.empty()) {
      const uint32_t i = stack_.back();
      stack_.pop_back();
      if (is_head(i)) {
        const uint32_t id = node(i).first & ~kTailTag;
        implicit_ -= tail_end(tails_[id]) - tails_[id].depth;
        free_tail(id);
      } else {
        const bool hashed = (node(i).count & kHashed) != 0;
        for (uint32_t c = node(i).first; c != NIL; c = node(c).next) {
          if (hashed) map_.erase(i, node(c).token);
          stack_.push_back(c);
        }
      }
      at(i) = Node{0, 0, NIL, free_head_, 0};
      free_head_ = i;
      --num_nodes_;
    }
  }

  NodePool& pool_;
  int max_depth_;
  bool global_;
  std::vector<Node*> chunks_;
  size_t size_ = 0;  // record slots used (records + free list + root)
  ChunkedArray<uint32_t> prev_;   // global only: previous (newer) sibling
  ChunkedArray<uint32_t> slink_;  // global only: suffix link of a plain node
  ChildMap map_;
  uint32_t free_head_ = NIL;
  size_t num_nodes_ = 0;  // records, not counting the root
  size_t implicit_ = 0;   // nodes in tails below their heads
  uint32_t clock_ = 0;    // tokens appended (renumbered: see renumber_stamps); the latest stamp
  std::vector<Seq> seqs_;
  std::vector<uint32_t> free_seqs_;
  std::vector<Tail> tails_;
  std::vector<uint32_t> free_tails_;
  std::vector<uint32_t> stack_;
  std::vector<Created> created_;  // extend(): nodes made plain for one token (global tries)
};

struct Request {
  Request(NodePool& pool, int max_depth) : trie(pool, max_depth, false), seq(trie.add_sequence()) {}
  Trie trie;     // the local trie: one sequence, the prompt + output
  uint32_t seq;  // that sequence in `trie`
  size_t prompt_len = 0;
  uint32_t global_seq = NIL;  // with the global trie on: the live response's sequence there

  const std::vector<int32_t>& tokens() const { return trie.tokens(seq); }
  size_t response_len() const { return tokens().size() - prompt_len; }
  size_t bytes() const { return sizeof(Request) + trie.overhead_bytes(); }
};

struct CachedResponse {
  uint32_t seq;      // in the global trie
  PyObject* req_id;  // owned
};

struct Config {
  int max_depth;
  long max_spec_tokens;
  double max_spec_factor;
  double max_spec_offset;
  double min_token_prob;
  Py_ssize_t max_cached_requests;
  long max_match_len() const { return max_depth - max_spec_tokens; }  // <= max_depth - 1
  bool global_on() const { return max_cached_requests > 0; }
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
  uint32_t stamp;
  int32_t parent;
  int32_t depth;
  Ref node;
  int32_t token;
};

// Max-heap order for std::push_heap: the top is the highest prob, then the highest stamp, then the
// lowest order (tree.py's heapq of (-prob, -stamp, order, ...)).
struct CandidateLess {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.prob != b.prob) return a.prob < b.prob;
    if (a.stamp != b.stamp) return a.stamp < b.stamp;
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
  std::vector<Candidate> heap;
  std::vector<uint32_t> children;
  DraftOut a, b;
  // limits[L]: draft_limit(L, limits_cap, ...) for L in 0..max_match_len (drafts of one call share a
  // cap: usually the configured one, so the table is rarely recomputed).
  std::vector<long> limits;
  long long limits_cap = LLONG_MIN;
  void set_limits(long long cap);
};

// ------------------------------------------------------------------------- arithmetic as in Python

// math.ceil(factor * match_len + offset - _CEIL_SLACK), clamped to [0, cap] (tree.py's draft_limit).
long draft_limit(long match_len, long long cap, double factor, double offset) {
  const double by_match = std::ceil(factor * static_cast<double>(match_len) + offset - kCeilSlack);
  long long limit = cap;
  if (by_match < static_cast<double>(limit)) limit = static_cast<long long>(by_match);
  return limit < 0 ? 0 : static_cast<long>(limit);
}

void State::set_limits(long long cap) {
  if (cap == limits_cap && !limits.empty()) return;
  limits.resize(static_cast<size_t>(cfg.max_match_len()) + 1);
  for (size_t length = 0; length < limits.size(); ++length) {
    limits[length] = draft_limit(static_cast<long>(length), cap, cfg.max_spec_factor, cfg.max_spec_offset);
  }
  limits_cap = cap;
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

// speculate_path: the most frequent child (ties: the highest stamp) while the path probability holds.
// Given up (no tokens) as soon as it cannot score more than `beat`: the path probabilities never
// grow, so after k tokens the draft scores at most (their sum) + (limit - k) * (the last one), up to
// the summation's rounding (kBoundSlack). Only a higher score replaces the best draft, so the result
// is the reference's. In long repeated text every match length's count differs and each length
// would otherwise walk a whole draft.
void speculate_path(const Trie& trie, Ref node, long limit, double min_token_prob, bool discount_self,
                    double beat, DraftOut& out) {
  out.tokens.clear();
  out.probs.clear();
  double prob = 1.0;
  double sum = 0.0;
  long long denominator = static_cast<long long>(trie.ref_count(node)) - (discount_self ? 1 : 0);
  while (static_cast<long>(out.tokens.size()) < limit && denominator > 0) {
    Ref best{NIL, 0};
    uint32_t best_count = 0;
    int32_t best_token = 0;
    if (trie.in_tail(node)) {  // one child: the sequence's next token
      uint32_t stamp;
      if (!trie.tail_child(node, best, best_token, stamp)) break;
      best_count = 1;
    } else {
      uint32_t best_stamp = 0;
      for (uint32_t c = trie.node(node.node).first; c != NIL; c = trie.node(c).next) {
        const uint32_t count = trie.count(c);
        const uint32_t stamp = trie.record_stamp(c);
        // Siblings have distinct stamps; on a full tie the list's last (the dict's first) would win.
        if (count > best_count || (count == best_count && stamp >= best_stamp)) {
          best.node = c;
          best_count = count;
          best_stamp = stamp;
        }
      }
      if (best.node == NIL) break;  // no children
      best_token = trie.node(best.node).token;
    }
    prob *= static_cast<double>(best_count) / static_cast<double>(denominator);
    if (prob < min_token_prob) break;
    out.tokens.push_back(best_token);
    out.probs.push_back(prob);
    sum += prob;
    if (beat > 0.0 && sum + static_cast<double>(limit - static_cast<long>(out.tokens.size())) * prob + kBoundSlack <= beat) {
      out.tokens.clear();
      out.probs.clear();
      return;
    }
    node = best;
    denominator = best_count;
  }
}

// speculate_tree: best-first expansion by path probability (ties: the highest stamp, then first pushed).
void speculate_tree(State& st, const Trie& trie, Ref node, long limit, long long max_nodes,
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
  auto push = [&](double prob, uint32_t stamp, int32_t parent_index, int32_t depth, Ref ref, int32_t token) {
    heap.push_back(Candidate{prob, order, stamp, parent_index, depth, ref, token});
    std::push_heap(heap.begin(), heap.end(), less);
    ++order;
  };
  auto push_children = [&](Ref parent, int32_t parent_index, double parent_prob, int32_t depth) {
    long long denominator = trie.ref_count(parent);
    if (parent_index == -1 && discount_self) denominator -= 1;
    if (denominator <= 0 || depth >= limit) return;
    if (trie.in_tail(parent)) {
      Ref child{NIL, 0};
      int32_t token;
      uint32_t stamp;
      if (!trie.tail_child(parent, child, token, stamp)) return;
      const double prob = parent_prob * 1.0 / static_cast<double>(denominator);
      if (prob >= min_token_prob) push(prob, stamp, parent_index, depth + 1, child, token);
      return;
    }
    children.clear();
    for (uint32_t c = trie.node(parent.node).first; c != NIL; c = trie.node(c).next) children.push_back(c);
    for (size_t k = children.size(); k-- > 0;) {  // oldest first: dict order
      const uint32_t c = children[k];
      const double prob = parent_prob * static_cast<double>(trie.count(c)) / static_cast<double>(denominator);
      if (prob >= min_token_prob) {
        push(prob, trie.record_stamp(c), parent_index, depth + 1, Ref{c, 0}, trie.node(c).token);
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

// tree.py's best_over_lengths: the best draft over the match lengths longest..1 of one trie, where
// node_at(L) gives the node of the last L tokens (called for descending L only; node kVirtual: in the
// request's own tail). A candidate replaces `best` only if it scores strictly more. kTree: tree drafts
// of at most `budget` nodes.
template <bool kTree, typename NodeAt>
void best_over_lengths(State& st, const Trie& trie, NodeAt&& node_at, long longest, long own_len,
                       long long budget, Source source, DraftOut& best) {
  const Config& cfg = st.cfg;
  DraftOut& cand = (&best == &st.a) ? st.b : st.a;
  const long* limits = st.limits.data();
  uint32_t above = NIL;  // the count of the node one length longer (counts never reach NIL)
  for (long length = longest; length > 0; --length) {
    const long limit = limits[length];
    const long long bound = kTree ? std::min(static_cast<long long>(limit), budget) : limit;
    if (static_cast<double>(bound) <= best.score) break;
    const Ref node = node_at(length);
    if (node.node == kVirtual) {  // in the request's own tail: count 1 (itself), no child yet
      above = 1;
      continue;
    }
    const uint32_t count = trie.ref_count(node);
    if (count == above) continue;
    above = count;
    if (!trie.has_children(node)) continue;
    const bool discount = length <= own_len;
    if (kTree) {
      speculate_tree(st, trie, node, limit, budget, cfg.min_token_prob, discount, cand);
    } else {
      speculate_path(trie, node, limit, cfg.min_token_prob, discount, best.score, cand);
    }
    if (cand.tokens.empty()) continue;
    const double score = py_sum(cand.probs);
    if (score > best.score) {
      std::swap(best.tokens, cand.tokens);
      std::swap(best.probs, cand.probs);
      if (kTree) std::swap(best.parents, cand.parents);
      best.score = score;
      best.match_len = length;
      best.source = source;
    }
  }
}

// SuffixDecodingCache._search: the local trie's lengths, then the global trie's with the local best
// as the draft to beat.
template <bool kTree>
void search(State& st, Request& r, long long cap, long long budget, DraftOut& best) {
  const Config& cfg = st.cfg;
  best.tokens.clear();
  best.parents.clear();
  best.probs.clear();
  best.score = 0.0;
  best.match_len = 0;
  best.source = kNone;
  st.set_limits(cap);
  const std::vector<uint32_t>& active = r.trie.active(r.seq);
  long longest = std::min(static_cast<long>(active.size()) - 1, cfg.max_match_len());
  best_over_lengths<kTree>(
      st, r.trie, [&active](long length) { return Ref{active[static_cast<size_t>(length)], 0}; }, longest,
      longest, budget, kLocal, best);
  if (!cfg.global_on() || st.global.root_count() == 0) return;
  const std::vector<int32_t>& context = r.tokens();
  const long own_len = static_cast<long>(r.response_len());
  longest = std::min(static_cast<long>(context.size()), cfg.max_match_len());
  Match m{Ref{0, 0}, 0};
  const Trie& global = st.global;
  const std::vector<uint32_t>& own = global.active(r.global_seq);
  if (own_len >= longest) {
    m = Match{Ref{own[static_cast<size_t>(longest)], 0}, longest};
  } else {
    m = global.longest_present(context.data(), context.size(), longest);
  }
  best_over_lengths<kTree>(
      st, global,
      [&m, &global, &own, own_len](long length) {
        if (length <= own_len) return Ref{own[static_cast<size_t>(length)], 0};  // no chain of lookups
        while (m.length > length) {
          m.node = global.suffix_link(m.node);
          --m.length;
        }
        return m.node;
      },
      m.length, own_len, budget, kGlobal, best);
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

// The Python error for the C++ exception being handled: MemoryError, OverflowError (CapacityError) or
// RuntimeError. Call only inside a catch block.
void set_error_from_exception() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const CapacityError& exc) {
    PyErr_SetString(PyExc_OverflowError, exc.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "suffix native backend: unexpected C++ exception");
  }
}

// Every entry point that may allocate runs its C++ part inside NATIVE_TRY ... NATIVE_CATCH: no C++
// exception crosses into Python. After a MemoryError the cache may hold a half-applied update.
// (Entry points that must release references first catch (...) themselves and call
// set_error_from_exception.)
#define NATIVE_TRY try {
#define NATIVE_CATCH           \
  }                            \
  catch (...) {                \
    set_error_from_exception(); \
    return nullptr;            \
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

Request* start(CacheObject* self, PyObject* req_id, const std::vector<int32_t>& prompt);

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
  if (start(self, req_id, st.token_buf) == nullptr) return nullptr;
  Py_RETURN_NONE;
  NATIVE_CATCH
}

// Start `req_id` (not active) with `prompt`: its request, or nullptr with a Python error set. May throw.
Request* start(CacheObject* self, PyObject* req_id, const std::vector<int32_t>& prompt) {
  State& st = *self->st;
  std::unique_ptr<Request> r(new Request(st.pool, st.cfg.max_depth));
  r->prompt_len = prompt.size();
  r->trie.extend(r->seq, prompt.data(), prompt.size());
  if (st.cfg.global_on()) r->global_seq = st.global.add_sequence();  // its live response, empty so far
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
  st.slots[static_cast<size_t>(slot)] = r.get();
  return r.release();
}

// Append `tokens` to request `r`: its local trie and, with the global trie on, its live response.
void extend(State& st, Request& r, const std::vector<int32_t>& tokens) {
  const bool live = st.cfg.global_on();
  r.trie.check_room(tokens.size());
  if (live) st.global.check_room(tokens.size());
  r.trie.extend(r.seq, tokens.data(), tokens.size());
  if (live) st.global.extend(r.global_seq, tokens.data(), tokens.size());
}

bool add_tokens(CacheObject* self, PyObject* req_id, PyObject* tokens) {
  State& st = *self->st;
  const Request* before = lookup(self, req_id);
  if (before == nullptr) return false;  // KeyError first, like the reference
  before->trie.prefetch_active(before->seq);  // these lines arrive while the tokens are converted
  if (st.cfg.global_on()) st.global.prefetch_active(before->global_seq);
  if (!to_tokens(tokens, st.token_buf)) return false;
  // Again: converting the tokens may have run Python code (__index__) that stopped the request.
  Request* r = lookup(self, req_id);
  if (r == nullptr) return false;
  extend(st, *r, st.token_buf);
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
  st.global.remove(it->second.seq);
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
  if (!st.cfg.global_on()) Py_RETURN_NONE;
  NATIVE_TRY
  if (!cache_response || r->response_len() == 0) {  // an abort (or nothing to cache): it leaves the trie
    st.global.remove(r->global_seq);
    Py_RETURN_NONE;
  }
  CachedResponse resp;  // the response stays in the global trie, now as a finished one
  resp.seq = r->global_seq;
  resp.req_id = nullptr;
  r.reset();
  const uint64_t key = st.next_key++;
  auto it = st.cached.emplace(key, resp).first;
  st.global.close(resp.seq);  // it will not grow any more
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

// Drop the finished response `req_id` left cached: 1 if there was one, 0 if not, -1 with a Python error.
// May throw.
int evict(CacheObject* self, PyObject* req_id) {
  PyObject* key_obj = PyDict_GetItemWithError(self->cached_ids, req_id);
  if (key_obj == nullptr) return PyErr_Occurred() ? -1 : 0;
  const unsigned long long key = PyLong_AsUnsignedLongLong(key_obj);
  if (PyErr_Occurred()) return -1;
  auto it = self->st->cached.find(key);
  if (it == self->st->cached.end()) {
    PyErr_SetString(PyExc_RuntimeError, "suffix native backend: cached response index out of step");
    return -1;
  }
  drop_cached(self, it);
  return 1;
}

PyObject* Cache_evict_response(CacheObject* self, PyObject* req_id) {
  NATIVE_TRY
  const int found = evict(self, req_id);
  if (found < 0) return nullptr;
  return PyBool_FromLong(found);
  NATIVE_CATCH
}

// ---- drafts

PyObject* speculate_one(CacheObject* self, PyObject* req_id, long long cap) {
  Request* r = lookup(self, req_id);
  if (r == nullptr) return nullptr;
  State& st = *self->st;
  search<false>(st, *r, cap, 0, st.a);
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
  search<true>(st, *r, cap, budget, st.a);
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
  } catch (...) {
    set_error_from_exception();
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

// ---- the engine's batch

// The integers of a 1-D or 2-D table: a buffer of signed integers (numpy arrays of any strides, as
// vLLM's InputBatch keeps them: read in place) or, without the buffer protocol, (nested) Python
// sequences of ints (read item by item, like the reference).
class IntTable {
 public:
  IntTable() = default;
  IntTable(const IntTable&) = delete;
  IntTable& operator=(const IntTable&) = delete;
  ~IntTable() {
    if (has_view_) PyBuffer_Release(&view_);
  }

  bool open(PyObject* obj, int ndim, const char* name) {
    obj_ = obj;
    if (!PyObject_CheckBuffer(obj)) return true;
    if (PyObject_GetBuffer(obj, &view_, PyBUF_RECORDS_RO) < 0) return false;
    has_view_ = true;
    const char* f = view_.format != nullptr ? view_.format : "B";
    if (*f == '@' || *f == '=' || *f == '<') ++f;  // x86-64 and aarch64 are little-endian
    const bool ok = f[0] != '\0' && f[1] == '\0' && std::strchr("bhilq", f[0]) != nullptr &&
                    view_.ndim == ndim;
    if (!ok) {
      PyErr_Format(PyExc_TypeError, "%s: expected a %d-D array of signed integers, got format '%s' with %d dimensions",
                   name, ndim, view_.format != nullptr ? view_.format : "B", view_.ndim);
      return false;
    }
    return true;
  }

  // Item i of a 1-D table.
  bool get(Py_ssize_t i, long long* out) const {
    if (has_view_) {
      if (i >= view_.shape[0]) return index_error();
      *out = read(static_cast<const char*>(view_.buf) + i * view_.strides[0]);
      return true;
    }
    PyObject* item = PySequence_GetItem(obj_, i);
    if (item == nullptr) return false;
    *out = PyLong_AsLongLong(item);
    Py_DECREF(item);
    return !(*out == -1 && PyErr_Occurred());
  }

  // Columns [lo, hi) of row i of a 2-D table (clamped to the row, like a slice) into `out`.
  bool row(Py_ssize_t i, Py_ssize_t lo, Py_ssize_t hi, std::vector<int32_t>& out) const {
    if (!has_view_) {
      PyObject* row = PySequence_GetItem(obj_, i);
      if (row == nullptr) return false;
      PyObject* slice = PySequence_GetSlice(row, lo, hi);
      Py_DECREF(row);
      if (slice == nullptr) return false;
      const bool ok = to_tokens(slice, out);
      Py_DECREF(slice);
      return ok;
    }
    if (i >= view_.shape[0]) return index_error();
    hi = std::min(hi, view_.shape[1]);
    out.clear();
    if (lo >= hi) return true;
    out.resize(static_cast<size_t>(hi - lo));
    const char* p = static_cast<const char*>(view_.buf) + i * view_.strides[0] + lo * view_.strides[1];
    for (Py_ssize_t k = 0; k < hi - lo; ++k, p += view_.strides[1]) {
      const long long value = read(p);
      if (value < INT32_MIN || value > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "token id %lld does not fit in 32 bits (native suffix backend)", value);
        return false;
      }
      out[static_cast<size_t>(k)] = static_cast<int32_t>(value);
    }
    return true;
  }

 private:
  long long read(const char* p) const {
    switch (view_.itemsize) {
      case 1: return *reinterpret_cast<const int8_t*>(p);
      case 2: return *reinterpret_cast<const int16_t*>(p);
      case 4: return *reinterpret_cast<const int32_t*>(p);
      default: return *reinterpret_cast<const int64_t*>(p);
    }
  }
  static bool index_error() {
    PyErr_SetString(PyExc_IndexError, "index out of range");
    return false;
  }

  PyObject* obj_ = nullptr;
  Py_buffer view_{};
  bool has_view_ = false;
};

// The active request of `req_id`, or nullptr: none (no error set) or the lookup failed (error set).
Request* find(CacheObject* self, PyObject* req_id) {
  PyObject* slot = PyDict_GetItemWithError(self->ids, req_id);  // borrowed
  return slot != nullptr ? self->st->slots[static_cast<size_t>(PyLong_AsSsize_t(slot))] : nullptr;
}

// sync_and_draft(req_ids, token_rows, num_tokens, num_prompt_tokens, sampled, max_spec_tokens,
// max_model_len): the engine's step over its batch (tree.py's sync_and_draft says what it does).
PyObject* Cache_sync_and_draft(CacheObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!check_nargs("sync_and_draft", nargs, 7, 7)) return nullptr;
  State& st = *self->st;
  long long cap = 0;
  if (!parse_cap(args[5], st.cfg.max_spec_tokens, &cap)) return nullptr;
  const long long max_model_len = PyLong_AsLongLong(args[6]);
  if (max_model_len == -1 && PyErr_Occurred()) return nullptr;
  IntTable rows, num_tokens, num_prompt;
  if (!rows.open(args[1], 2, "token_rows") || !num_tokens.open(args[2], 1, "num_tokens") ||
      !num_prompt.open(args[3], 1, "num_prompt_tokens")) {
    return nullptr;
  }
  PyObject* ids = as_fast(args[0]);
  if (ids == nullptr) return nullptr;
  PyObject* sampled = args[4];
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(ids);
  PyObject* out = PyList_New(n);
  std::vector<int32_t>& buf = st.token_buf;
  if (out == nullptr) goto fail;
  try {
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* req_id = PySequence_Fast_GET_ITEM(ids, i);
      PyObject* flag = PySequence_GetItem(sampled, i);
      if (flag == nullptr) goto fail;
      const int was_sampled = PyObject_IsTrue(flag);
      Py_DECREF(flag);
      if (was_sampled < 0) goto fail;
      PyObject* draft = nullptr;
      if (was_sampled) {
        long long count = 0;
        if (!num_tokens.get(i, &count)) goto fail;
        Request* r = find(self, req_id);
        if (r == nullptr && PyErr_Occurred()) goto fail;  // a failing __hash__ or __eq__
        if (r == nullptr) {  // not seen yet, or seen again after it left: start it from its prompt
          long long prompt_len = 0;
          if (!num_prompt.get(i, &prompt_len)) goto fail;
          if (evict(self, req_id) < 0) goto fail;
          if (!rows.row(i, 0, static_cast<Py_ssize_t>(std::max(prompt_len, 0LL)), buf)) goto fail;
          r = start(self, req_id, buf);
          if (r == nullptr) goto fail;
        }
        const long long have = static_cast<long long>(r->tokens().size());
        if (count > have) {
          if (!rows.row(i, static_cast<Py_ssize_t>(have), static_cast<Py_ssize_t>(count), buf)) goto fail;
          extend(st, *r, buf);
        }
        const long long room = std::min(cap, max_model_len - 1 - count);
        if (room > 0) {
          search<false>(st, *r, room, 0, st.a);
          draft = int_list(st.a.tokens);
        }
      }
      if (draft == nullptr) draft = PyList_New(0);
      if (draft == nullptr) goto fail;
      PyList_SET_ITEM(out, i, draft);
    }
  } catch (...) {
    set_error_from_exception();
    goto fail;
  }
  Py_DECREF(ids);
  return out;
fail:
  Py_DECREF(ids);
  Py_XDECREF(out);
  return nullptr;
}

PyObject* Cache_num_active_requests(CacheObject* self, PyObject*) { return PyLong_FromSsize_t(PyDict_Size(self->ids)); }

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
  return int_list(r->tokens());
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
    bytes += sizeof(item) + 32;  // 32: the map's links; the tokens are the global trie's
  }
  return Py_BuildValue("(nnnnnnn)", static_cast<Py_ssize_t>(local_trees), static_cast<Py_ssize_t>(local_nodes),
                       static_cast<Py_ssize_t>(st.cached.size()), static_cast<Py_ssize_t>(st.global.root_count()),
                       static_cast<Py_ssize_t>(st.global.num_nodes()), static_cast<Py_ssize_t>(sizeof(Node)),
                       static_cast<Py_ssize_t>(bytes));
}

// Tests only: move every trie's clock on to `value` (never back), so that a test can make the stamp
// renumbering run after a few tokens and check that no draft changes.
PyObject* Cache_advance_stamp_clock(CacheObject* self, PyObject* arg) {
  const unsigned long value = PyLong_AsUnsignedLong(arg);
  if (PyErr_Occurred()) return nullptr;
  if (value > kStampMax) {
    PyErr_SetString(PyExc_OverflowError, "a stamp is 32 bits");
    return nullptr;
  }
  State& st = *self->st;
  st.global.advance_clock(static_cast<uint32_t>(value));
  for (Request* r : st.slots) {
    if (r != nullptr) r->trie.advance_clock(static_cast<uint32_t>(value));
  }
  Py_RETURN_NONE;
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
    {"sync_and_draft", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Cache_sync_and_draft)),
     METH_FASTCALL,
     "sync_and_draft(req_ids, token_rows, num_tokens, num_prompt_tokens, sampled, max_spec_tokens, "
     "max_model_len, /) -> list[list[int]]"},
    {"num_active_requests", reinterpret_cast<PyCFunction>(Cache_num_active_requests), METH_NOARGS,
     "num_active_requests() -> int"},
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
    {"_advance_stamp_clock", reinterpret_cast<PyCFunction>(Cache_advance_stamp_clock), METH_O,
     "_advance_stamp_clock(value, /): tests only, move every trie's clock on to value"},
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
