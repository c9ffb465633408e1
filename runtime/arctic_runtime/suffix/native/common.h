// Shared definitions of the native suffix decoding backend: the node record, constants, errors.
// No Python here: only bindings.cpp includes Python (through nanobind).
//
// Layout. A node record is 20 bytes: token, count, newest child, next older sibling, stamp (the trie's
// clock at the node's latest increment: the clock moves on by one per appended token, so siblings
// never share a stamp and the greedy draft's tie-break, "most recently incremented", is the highest
// stamp). A node's children form a singly linked list, newest first. A child is found by scanning the
// list while it is short; a node with more than kScanLimit children also has them in the trie's
// open-addressing hash table keyed by (parent, token) (marked by the top bit of its count). Stamps are
// 32 bits: before the clock would pass 2**32 - 1 (billions of tokens through one global trie), all
// stamps are renumbered 1..k in their order, which changes no comparison.
//
// Floating point: compiled with -ffp-contract=off so no multiply-add is fused; Python never fuses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace arctic_suffix {

constexpr uint32_t NIL = 0xFFFFFFFFu;
constexpr uint32_t kHashed = 0x80000000u;     // in Node::count: the children are in the hash table
constexpr uint32_t kCountMask = 0x7FFFFFFFu;  // in Node::count: the occurrence count
constexpr uint32_t kScanLimit = 8;            // children found by scanning the sibling list
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

// A trie too large for 32-bit counts or indices (billions of tokens): OverflowError in Python.
struct CapacityError : std::overflow_error {
  using std::overflow_error::overflow_error;
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

constexpr uint32_t kTailTag = 0x80000000u;       // in Node::first of a tail head: kTailTag | tail id
constexpr uint32_t kVirtual = 0xFFFFFFFEu;       // in an active list: the node is in that suffix's own tail
constexpr uint32_t kMaxRecords = kTailTag - 16;  // record indices stay below kTailTag

}  // namespace arctic_suffix
