// The engine's batch; see batch.h.
#include "batch.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

namespace arctic_suffix {

void append_row_tokens(const IntTable& table, int64_t row, int64_t lo, int64_t hi, const char* field,
                       std::vector<int32_t>& out) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min(hi, table.cols);
  if (lo >= hi) return;
  const size_t base = out.size();
  out.resize(base + static_cast<size_t>(hi - lo));
  int32_t* dst = out.data() + base;
  if (table.itemsize == 4 && table.is_signed) {  // vLLM's int32 buffer: no range check needed
    const char* p = table.data + row * table.row_stride + lo * table.col_stride;
    for (int64_t k = lo; k < hi; ++k, p += table.col_stride) *dst++ = *reinterpret_cast<const int32_t*>(p);
    return;
  }
  for (int64_t k = lo; k < hi; ++k) {
    const int64_t value = table.at(row, k);
    if (value < INT32_MIN || value > INT32_MAX) {
      out.resize(base);
      throw TokenRangeError(std::string(field) + ": token id " + std::to_string(value) +
                            " does not fit in 32 bits (native suffix backend)");
    }
    *dst++ = static_cast<int32_t>(value);
  }
}

void run_batch(SuffixCache& cache, std::vector<BatchRow>& rows, const std::vector<int32_t>& tokens,
               std::vector<int32_t>& drafts, std::vector<size_t>& draft_offsets) {
  drafts.clear();
  draft_offsets.assign(1, 0);
  for (BatchRow& row : rows) {
    if (row.sampled) {
      const int32_t* add = tokens.data() + row.offset;
      if (row.start) {
        if (row.evict != SuffixCache::kNoKey) {
          cache.evict(row.evict);
          row.evicted = true;
        }
        row.slot = cache.start(add, row.prompt);
        row.started = true;
        add += row.prompt;
      }
      if (row.extra > 0) cache.extend(row.slot, add, row.extra);
      if (row.room > 0) {
        const DraftOut& d = cache.draft(row.slot, row.room);
        drafts.insert(drafts.end(), d.tokens.begin(), d.tokens.end());
      }
    }
    row.done = true;
    draft_offsets.push_back(drafts.size());
  }
}

}  // namespace arctic_suffix
