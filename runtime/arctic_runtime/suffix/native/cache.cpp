// The cache's request lifecycle, drafts and accounting; see cache.h.
#include "cache.h"

#include <stdexcept>
#include <utility>

namespace arctic_suffix {

namespace {

Config checked(const Config& cfg) {
  cfg.check();
  return cfg;
}

}  // namespace

SuffixCache::SuffixCache(const Config& cfg)
    : cfg_(checked(cfg)), global_(pool_, cfg.max_depth, true), drafter_(cfg_) {}

SuffixCache::~SuffixCache() { slots_.clear(); }  // the local tries go back to the pool first

Request& SuffixCache::request(Slot slot) {
  if (slot >= slots_.size() || slots_[slot] == nullptr) throw std::logic_error("suffix cache: no request in slot");
  return *slots_[slot];
}

const Request& SuffixCache::request(Slot slot) const {
  if (slot >= slots_.size() || slots_[slot] == nullptr) throw std::logic_error("suffix cache: no request in slot");
  return *slots_[slot];
}

SuffixCache::Slot SuffixCache::start(const int32_t* prompt, size_t n) {
  auto r = std::make_unique<Request>(pool_, cfg_.max_depth);
  r->prompt_len = n;
  r->trie.extend(r->seq, prompt, n);
  if (free_slots_.empty()) {
    if (slots_.size() >= NIL) throw CapacityError("a suffix cache cannot hold more requests");
    slots_.emplace_back();
    free_slots_.reserve(slots_.size());  // stop()'s push_back never allocates
    free_slots_.push_back(static_cast<Slot>(slots_.size() - 1));
  }
  if (cfg_.global_on()) r->global_seq = global_.add_sequence();  // its live response, empty so far
  const Slot slot = free_slots_.back();
  free_slots_.pop_back();
  slots_[slot] = std::move(r);
  return slot;
}

void SuffixCache::extend(Slot slot, const int32_t* tokens, size_t n) {
  Request& r = request(slot);
  const bool live = cfg_.global_on();
  r.trie.check_room(n);
  if (live) global_.check_room(n);
  r.trie.extend(r.seq, tokens, n);
  if (live) global_.extend(r.global_seq, tokens, n);
}

SuffixCache::Key SuffixCache::stop(Slot slot, bool cache_response, std::vector<Key>& dropped) {
  Request& r = request(slot);
  const uint32_t seq = r.global_seq;
  const bool keep = cfg_.global_on() && cache_response && r.response_len() != 0;
  Key key = kNoKey;
  if (keep) {  // the response stays in the global trie, now as a finished one (allocated first)
    key = next_key_;
    cached_.emplace(key, seq);
    ++next_key_;
  }
  slots_[slot].reset();
  free_slots_.push_back(slot);  // capacity reserved by start(): no allocation
  if (!cfg_.global_on()) return key;
  if (!keep) {  // an abort (or nothing to cache): it leaves the trie
    global_.remove(seq);
    return key;
  }
  global_.close(seq);  // it will not grow any more
  while (cached_.size() > static_cast<size_t>(cfg_.max_cached_requests)) {
    auto oldest = cached_.begin();
    dropped.push_back(oldest->first);
    global_.remove(oldest->second);
    cached_.erase(oldest);
  }
  return key;
}

void SuffixCache::evict(Key key) {
  auto it = cached_.find(key);
  if (it == cached_.end()) throw std::logic_error("suffix cache: no cached response of that key");
  global_.remove(it->second);
  cached_.erase(it);
}

const DraftOut& SuffixCache::draft(Slot slot, long long cap) {
  const Request& r = request(slot);
  return drafter_.draft(r.trie, r.seq, global_, r.global_seq, static_cast<long>(r.response_len()), cap);
}

void SuffixCache::prefetch(Slot slot) const {
  const Request& r = request(slot);
  r.trie.prefetch_active(r.seq);
  if (cfg_.global_on()) global_.prefetch_active(r.global_seq);
}

Memory SuffixCache::memory() const {
  Memory m;
  size_t bytes = sizeof(SuffixCache) + pool_.resident_bytes() + global_.overhead_bytes();
  for (const auto& r : slots_) {
    if (r == nullptr) continue;
    ++m.local_trees;
    m.local_nodes += r->trie.num_nodes();
    bytes += r->bytes();
  }
  bytes += slots_.capacity() * sizeof(slots_[0]) + free_slots_.capacity() * sizeof(Slot);
  bytes += cached_.size() * (sizeof(std::pair<const Key, uint32_t>) + 32);  // 32: the map's links
  m.cached_responses = cached_.size();
  m.cached_tokens = global_.root_count();
  m.global_nodes = global_.num_nodes();
  m.allocated_bytes = bytes;
  return m;
}

void SuffixCache::advance_stamp_clock(uint32_t value) {
  global_.advance_clock(value);
  for (auto& r : slots_) {
    if (r != nullptr) r->trie.advance_clock(value);
  }
}

}  // namespace arctic_suffix
