// The Trie's updates (extend, remove, tails, stamps) and its matching statistics; see trie.h.
#include "trie.h"

#include <algorithm>
#include <vector>

namespace arctic_suffix {

size_t Trie::overhead_bytes() const {
  size_t bytes = chunks_.capacity() * sizeof(Node*) + prev_.bytes() + slink_.bytes() + map_.bytes() +
                 stack_.capacity() * sizeof(uint32_t) + created_.capacity() * sizeof(Created) +
                 tails_.capacity() * sizeof(Tail) + free_tails_.capacity() * sizeof(uint32_t) +
                 seqs_.capacity() * sizeof(Seq) + free_seqs_.capacity() * sizeof(uint32_t);
  for (const Seq& s : seqs_) {
    bytes += (s.tokens.capacity() + s.stamps.capacity() + s.active.capacity()) * sizeof(uint32_t);
  }
  return bytes;
}

void Trie::extend(uint32_t seq_id, const int32_t* tokens, size_t n) {
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

void Trie::remove(uint32_t seq_id) {
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

void Trie::reset_nodes() {
  release_nodes();
  size_ = 0;
  free_head_ = NIL;
  num_nodes_ = 0;
  implicit_ = 0;
  clock_ = 0;  // no stamp is left to compare with (every sequence left is empty)
  append(Node{0, 0, NIL, NIL, 0});  // the root
}

void Trie::release_nodes() {
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

uint32_t Trie::new_tail(const Tail& t) {
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

void Trie::split(uint32_t h, uint32_t stamp) {
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

void Trie::renumber_stamps() {
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

void Trie::add_chunk() {
  if (size_ >= kMaxRecords) throw CapacityError("a suffix trie cannot hold more than 2**31 - 16 node records");
  chunks_.reserve(chunks_.size() + 1);
  if (global_) {
    prev_.ensure(size_ + NodePool::kChunkNodes);
    slink_.ensure(size_ + NodePool::kChunkNodes);
  }
  chunks_.push_back(pool_.get());
}

uint32_t Trie::add_child(uint32_t parent, Node& p, int32_t token, uint32_t siblings) {
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

void Trie::unlink(uint32_t parent, uint32_t child) {
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

void Trie::free_subtree(uint32_t top) {
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

Match Trie::longest_present(const int32_t* context, size_t n, long cap) const {
  Match m{Ref{0, 0}, 0};
  const long limit = std::min(static_cast<long>(n), cap);
  if (limit <= 0) return m;
  for (size_t i = n - static_cast<size_t>(limit); i < n; ++i) advance(m.node, m.length, context[i], cap);
  return m;
}

void Trie::advance(Ref& node_ref, long& length, int32_t token, long cap) const {
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

}  // namespace arctic_suffix
