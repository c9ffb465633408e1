// Drafting (tree.py's speculate_path, best_over_lengths and SuffixDecodingCache._search): the best
// greedy draft over every match length of a request's local trie and of the global trie.
//
// Matching. Every match length is scored, from the longest down. In the local trie the node of each
// length is the request's active node at that depth. In the global trie the nodes of the suffixes
// within the request's live response are its active nodes there; when the response is shorter than
// the longest length allowed, the longest suffix of the context that occurs is found in one
// left-to-right pass over the last max_match_len tokens with suffix links (matching statistics), and
// shorter lengths follow suffix links: the node of the last L - 1 tokens is the suffix link of the node
// of the last L.
//
// The arithmetic is Python's (same operations in the same order, -ffp-contract=off), so drafts,
// probabilities and scores equal the reference's bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "trie.h"

namespace arctic_suffix {

// SuffixConfig's fields (tree.py documents them), plus how Python sums floats on this interpreter.
struct Config {
  int max_depth = 64;
  long max_spec_tokens = 16;
  double max_spec_factor = 1.0;
  double max_spec_offset = 0.0;
  double min_token_prob = 0.1;
  int64_t max_cached_requests = 1000;
  // Python >= 3.12's sum() of floats is compensated (Neumaier); before, plain left to right.
  bool compensated_sum = false;

  long max_match_len() const { return max_depth - max_spec_tokens; }  // <= max_depth - 1
  bool global_on() const { return max_cached_requests > 0; }
  // std::invalid_argument naming the field and its allowed range.
  void check() const;
};

enum Source { kNone = 0, kLocal = 1, kGlobal = 2 };

struct DraftOut {
  std::vector<int32_t> tokens;
  std::vector<double> probs;
  double score = 0.0;
  long match_len = 0;
  Source source = kNone;
};

// tree.py's draft_limit: min(cap, ceil(factor * match_len + offset)), at least 0.
long draft_limit(long match_len, long long cap, double factor, double offset);

// Scratch and the draft-limit table of one cache (not thread-safe: one engine loop owns a cache).
class Drafter {
 public:
  explicit Drafter(const Config& cfg) : cfg_(cfg) {}

  // The best draft for the request whose local trie is `local` (sequence `seq`) and whose live response
  // is sequence `global_seq` of `global` (`response_len` tokens; the global trie is not consulted when
  // it is off or empty), with at most `cap` tokens. Valid until the next call.
  const DraftOut& draft(const Trie& local, uint32_t seq, const Trie& global, uint32_t global_seq,
                        long response_len, long long cap);

 private:
  template <typename NodeAt>
  void best_over_lengths(const Trie& trie, NodeAt&& node_at, long longest, long own_len, Source source);
  void set_limits(long long cap);
  double py_sum(const std::vector<double>& values) const;

  const Config& cfg_;
  DraftOut best_, cand_;
  // limits_[L]: draft_limit(L, limits_cap_, ...) for L in 0..max_match_len (drafts of one call share a
  // cap: usually the configured one, so the table is rarely recomputed).
  std::vector<long> limits_;
  long long limits_cap_ = 0;
  bool limits_set_ = false;
};

}  // namespace arctic_suffix
