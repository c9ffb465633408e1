// Drafting; see speculate.h.
#include "speculate.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

namespace arctic_suffix {

namespace {

std::string number(double value) {
  std::string text = std::to_string(value);
  return text;
}

}  // namespace

void Config::check() const {
  if (max_depth < 2 || max_depth > 4096) {
    throw std::invalid_argument("max_depth: must be an integer in 2..4096, got " + std::to_string(max_depth));
  }
  if (max_spec_tokens < 1 || max_spec_tokens > max_depth - 1) {
    throw std::invalid_argument("max_spec_tokens: must be an integer in 1.." + std::to_string(max_depth - 1) +
                                ", got " + std::to_string(max_spec_tokens));
  }
  if (!std::isfinite(max_spec_factor) || !std::isfinite(max_spec_offset) || !std::isfinite(min_token_prob)) {
    throw std::invalid_argument("max_spec_factor, max_spec_offset, min_token_prob: must be finite, got " +
                                number(max_spec_factor) + ", " + number(max_spec_offset) + ", " +
                                number(min_token_prob));
  }
  if (max_cached_requests < 0) {
    throw std::invalid_argument("max_cached_requests: must be >= 0, got " + std::to_string(max_cached_requests));
  }
}

// math.ceil(factor * match_len + offset - _CEIL_SLACK), clamped to [0, cap] (tree.py's draft_limit).
long draft_limit(long match_len, long long cap, double factor, double offset) {
  const double by_match = std::ceil(factor * static_cast<double>(match_len) + offset - kCeilSlack);
  long long limit = cap;
  if (by_match < static_cast<double>(limit)) limit = static_cast<long long>(by_match);
  return limit < 0 ? 0 : static_cast<long>(limit);
}

void Drafter::set_limits(long long cap) {
  if (limits_set_ && cap == limits_cap_) return;
  limits_.resize(static_cast<size_t>(cfg_.max_match_len()) + 1);
  for (size_t length = 0; length < limits_.size(); ++length) {
    limits_[length] = draft_limit(static_cast<long>(length), cap, cfg_.max_spec_factor, cfg_.max_spec_offset);
  }
  limits_cap_ = cap;
  limits_set_ = true;
}

// Python's built-in sum() over a list of floats: from 0 (int), so the first float is taken as is;
// plain left-to-right addition before 3.12, Neumaier compensated summation from 3.12 on.
double Drafter::py_sum(const std::vector<double>& values) const {
  if (values.empty()) return 0.0;
  double total = values[0];
  if (!cfg_.compensated_sum) {
    for (size_t i = 1; i < values.size(); ++i) total += values[i];
    return total;
  }
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
  return total;
}

namespace {

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

}  // namespace

// tree.py's best_over_lengths: the best draft over the match lengths longest..1 of one trie, where
// node_at(L) gives the node of the last L tokens (called for descending L only; node kVirtual: in the
// request's own tail). A candidate replaces the best so far only if it scores strictly more.
template <typename NodeAt>
void Drafter::best_over_lengths(const Trie& trie, NodeAt&& node_at, long longest, long own_len, Source source) {
  const long* limits = limits_.data();
  uint32_t above = NIL;  // the count of the node one length longer (counts never reach NIL)
  for (long length = longest; length > 0; --length) {
    const long limit = limits[length];
    if (static_cast<double>(limit) <= best_.score) break;
    const Ref node = node_at(length);
    if (node.node == kVirtual) {  // in the request's own tail: count 1 (itself), no child yet
      above = 1;
      continue;
    }
    const uint32_t count = trie.ref_count(node);
    if (count == above) continue;
    above = count;
    if (!trie.has_children(node)) continue;
    speculate_path(trie, node, limit, cfg_.min_token_prob, length <= own_len, best_.score, cand_);
    if (cand_.tokens.empty()) continue;
    const double score = py_sum(cand_.probs);
    if (score > best_.score) {
      std::swap(best_.tokens, cand_.tokens);
      std::swap(best_.probs, cand_.probs);
      best_.score = score;
      best_.match_len = length;
      best_.source = source;
    }
  }
}

// SuffixDecodingCache._search: the local trie's lengths, then the global trie's with the local best
// as the draft to beat.
const DraftOut& Drafter::draft(const Trie& local, uint32_t seq, const Trie& global, uint32_t global_seq,
                               long response_len, long long cap) {
  best_.tokens.clear();
  best_.probs.clear();
  best_.score = 0.0;
  best_.match_len = 0;
  best_.source = kNone;
  set_limits(cap);
  const std::vector<uint32_t>& active = local.active(seq);
  long longest = std::min(static_cast<long>(active.size()) - 1, cfg_.max_match_len());
  best_over_lengths(
      local, [&active](long length) { return Ref{active[static_cast<size_t>(length)], 0}; }, longest, longest,
      kLocal);
  if (!cfg_.global_on() || global.root_count() == 0) return best_;
  const std::vector<int32_t>& context = local.tokens(seq);
  const long own_len = response_len;
  longest = std::min(static_cast<long>(context.size()), cfg_.max_match_len());
  Match m{Ref{0, 0}, 0};
  const std::vector<uint32_t>& own = global.active(global_seq);
  if (own_len >= longest) {
    m = Match{Ref{own[static_cast<size_t>(longest)], 0}, longest};
  } else {
    m = global.longest_present(context.data(), context.size(), longest);
  }
  best_over_lengths(
      global,
      [&m, &global, &own, own_len](long length) {
        if (length <= own_len) return Ref{own[static_cast<size_t>(length)], 0};  // no chain of lookups
        while (m.length > length) {
          m.node = global.suffix_link(m.node);
          --m.length;
        }
        return m.node;
      },
      m.length, own_len, kGlobal);
  return best_;
}

}  // namespace arctic_suffix
