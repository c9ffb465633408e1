// A suffix trie of the native backend (tree.py's SuffixTree), stored compactly: node records in pool
// chunks, unique paths as tails read from the stored tokens. Counts, stamps and node counts are the
// reference trie's; only the storage differs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common.h"
#include "memory.h"

namespace arctic_suffix {


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
  size_t overhead_bytes() const;

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
  void extend(uint32_t seq_id, const int32_t* tokens, size_t n);

  // Take out sequence `seq`'s counts, nodes and tails, and forget it (global tries); tree.py's remove().
  void remove(uint32_t seq_id);

  // Matching (global tries). advance() appends one token to a context whose longest suffix of at most
  // `cap` tokens found in the trie is (node, length), keeping that invariant.
  void advance(Ref& node_ref, long& length, int32_t token, long cap) const;

  // The longest suffix of context[0..n) of at most `cap` tokens found in the trie.
  Match longest_present(const int32_t* context, size_t n, long cap) const;

 private:
  struct Created {
    uint32_t node;
    uint32_t parent_depth;
  };

  Node& at(uint32_t i) { return chunks_[i >> NodePool::kShift][i & (NodePool::kChunkNodes - 1)]; }

  void reset_nodes();

  void release_nodes();

  uint32_t new_tail(const Tail& t);
  void free_tail(uint32_t id) { free_tails_.push_back(id); }

  size_t tail_end(const Tail& t) const {  // the depth of the tail's deepest node
    return std::min(static_cast<size_t>(max_depth_), seqs_[t.seq].tokens.size() - t.start);
  }

  // A second occurrence reaches tail head `h` (its own sequence already extended by the current token,
  // if it is the sequence being extended): it becomes a plain node counted twice, and the tail's next
  // implicit node, if any, its new head.
  void split(uint32_t h, uint32_t stamp);

  // Give the stamps the values 1..k in the same order (equal stamps stay equal) and set the clock to
  // k: no comparison between stamps changes. Once per ~4 billion tokens at most.
  void renumber_stamps();

  // A fresh record slot at the end (node chunks and link arrays grow a chunk at a time).
  uint32_t append(const Node& value) {
    if ((size_ & (NodePool::kChunkNodes - 1)) == 0) add_chunk();
    const uint32_t i = static_cast<uint32_t>(size_++);
    at(i) = value;
    return i;
  }

  void add_chunk();

  // A new child record of `parent` (whose record is `p`) for `token`, newest in its sibling list;
  // `siblings`: how many children it had (it joins the hash table past kScanLimit).
  uint32_t add_child(uint32_t parent, Node& p, int32_t token, uint32_t siblings);

  void unlink(uint32_t parent, uint32_t child);

  // Free `top` and every record below it (tails: their implicit nodes go too).
  void free_subtree(uint32_t top);

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

}  // namespace arctic_suffix
