// The engine's step over its whole batch (tree.py's SuffixDecodingCache.sync_and_draft), given as
// plain C++ data: the rows already resolved to requests (bindings.cpp does that), and the tokens each
// row adds read from an integer table of any width and strides (vLLM's numpy token buffer, in place).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cache.h"

namespace arctic_suffix {

// A 2-D (or, with cols_stride unused, 1-D) table of integers in memory that someone else owns and
// keeps alive and unmoved while it is read: strides in bytes (any sign), items of 1, 2, 4 or 8 bytes.
struct IntTable {
  const char* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 0;
  int itemsize = 4;
  bool is_signed = true;

  // Item (row, col), both in range; unsigned values above INT64_MAX read as INT64_MAX.
  int64_t at(int64_t row, int64_t col) const {
    const char* p = data + row * row_stride + col * col_stride;
    switch (itemsize) {
      case 1: return is_signed ? int64_t{*reinterpret_cast<const int8_t*>(p)} : int64_t{*reinterpret_cast<const uint8_t*>(p)};
      case 2: return is_signed ? int64_t{*reinterpret_cast<const int16_t*>(p)} : int64_t{*reinterpret_cast<const uint16_t*>(p)};
      case 4: return is_signed ? int64_t{*reinterpret_cast<const int32_t*>(p)} : int64_t{*reinterpret_cast<const uint32_t*>(p)};
      default: {
        if (is_signed) return *reinterpret_cast<const int64_t*>(p);
        const uint64_t v = *reinterpret_cast<const uint64_t*>(p);
        return v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
      }
    }
  }
};

// A token id that does not fit in 32 bits (OverflowError).
struct TokenRangeError : std::overflow_error {
  using std::overflow_error::overflow_error;
};

// Columns [lo, hi) of row `row` of `table` (clamped to the row, like a Python slice) appended to
// `out` as token ids; TokenRangeError names `field` if one does not fit in 32 bits.
void append_row_tokens(const IntTable& table, int64_t row, int64_t lo, int64_t hi, const char* field,
                       std::vector<int32_t>& out);

// One row of the engine's batch, resolved: what sync_and_draft does with it.
struct BatchRow {
  bool sampled = false;            // false: no draft, nothing else (a prompt still being prefilled)
  bool start = false;              // a request to start (not active): from the first `prompt` tokens
  SuffixCache::Slot slot = 0;      // an active request's slot (start: set by run_batch)
  SuffixCache::Key evict = SuffixCache::kNoKey;  // start: the finished response of that id to drop first
  long long room = 0;              // draft at most this many tokens (none when <= 0)
  size_t offset = 0;               // the tokens to add: tokens[offset, offset + prompt + extra)
  size_t prompt = 0;
  size_t extra = 0;
  bool evicted = false;            // set by run_batch: `evict` was dropped
  bool started = false;            // set by run_batch: the request was started (its slot is set)
  bool done = false;               // set by run_batch once the row is applied
};

// For each sampled row in order: evict / start / extend as planned, then draft at most `room` tokens.
// Row i's draft is drafts[draft_offsets[i] .. draft_offsets[i + 1]). May throw std::bad_alloc or
// CapacityError (the batch is then applied up to the failing row).
void run_batch(SuffixCache& cache, std::vector<BatchRow>& rows, const std::vector<int32_t>& tokens,
               std::vector<int32_t>& drafts, std::vector<size_t>& draft_offsets);

}  // namespace arctic_suffix
