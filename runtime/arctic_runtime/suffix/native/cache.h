// The whole suffix decoding cache of tree.py's SuffixDecodingCache in C++, without Python: requests are
// numbered slots, finished responses numbered keys (bindings.cpp maps Python request ids onto them).
//
// Each request has its own local trie (its chunks go back to the pool when it stops), holding its
// prompt + output. The global trie (responses of running requests, inserted as their tokens arrive,
// and of finished ones) also keeps, per record, the previous sibling (O(1) unlink when a removal
// deletes a record; deleted records go on a free list and are reused) and the suffix link (the node of
// the path minus its first token), both in pool chunks too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "memory.h"
#include "speculate.h"
#include "trie.h"

namespace arctic_suffix {

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

// memory_estimate()'s native numbers (tree.py documents them).
struct Memory {
  size_t local_trees = 0;
  size_t local_nodes = 0;
  size_t cached_responses = 0;
  size_t cached_tokens = 0;
  size_t global_nodes = 0;
  size_t bytes_per_node = sizeof(Node);
  size_t allocated_bytes = 0;
};

class SuffixCache {
 public:
  using Slot = uint32_t;
  using Key = uint64_t;
  static constexpr Key kNoKey = ~Key{0};

  explicit SuffixCache(const Config& cfg);  // std::invalid_argument for a bad config
  SuffixCache(const SuffixCache&) = delete;
  SuffixCache& operator=(const SuffixCache&) = delete;
  ~SuffixCache();

  const Config& config() const { return cfg_; }

  // A new request with its prompt (and, with the global trie on, an empty live response); its slot.
  Slot start(const int32_t* prompt, size_t n);
  // Append generated tokens: the local trie and, global trie on, the live response.
  void extend(Slot slot, const int32_t* tokens, size_t n);
  // Free the request's local trie. With `cache_response` a non-empty response stays in the global trie
  // as the finished response of the returned key, and the oldest finished ones beyond
  // max_cached_requests are removed (their keys appended to `dropped`); otherwise (an abort, or
  // nothing to keep) the response leaves the trie and kNoKey is returned.
  Key stop(Slot slot, bool cache_response, std::vector<Key>& dropped);
  // Remove finished response `key` (it must be held: `holds`).
  void evict(Key key);
  bool holds(Key key) const { return cached_.count(key) != 0; }

  // The best draft for the request, at most `cap` tokens; valid until the next call.
  const DraftOut& draft(Slot slot, long long cap);

  const std::vector<int32_t>& tokens(Slot slot) const { return request(slot).tokens(); }
  size_t num_active() const { return slots_.size() - free_slots_.size(); }
  size_t slot_capacity() const { return slots_.size(); }  // slots are below this
  size_t num_cached() const { return cached_.size(); }
  Memory memory() const;
  // Ask for the cache lines extend() will touch first (a request's active nodes).
  void prefetch(Slot slot) const;
  // Tests: move every trie's clock on to `value` (never back), so that the stamp renumbering runs soon.
  void advance_stamp_clock(uint32_t value);

 private:
  Request& request(Slot slot);
  const Request& request(Slot slot) const;

  Config cfg_;
  NodePool pool_;  // before every trie: destroyed after them
  std::vector<std::unique_ptr<Request>> slots_;
  std::vector<Slot> free_slots_;
  Trie global_;
  std::map<Key, uint32_t> cached_;  // finished responses: key -> sequence in global_, FIFO by key
  Key next_key_ = 0;
  Drafter drafter_;
};

}  // namespace arctic_suffix
