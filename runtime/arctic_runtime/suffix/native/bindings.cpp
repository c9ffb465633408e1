// Python bindings of the native suffix decoding backend (nanobind): arctic_runtime.suffix._native.Cache,
// the C++ SuffixCache (cache.h) behind tree.py's SuffixDecodingCache(backend="native"). The bindings own
// the Python side: request ids (any hashable) mapped onto the core's slots and keys by dicts, inputs
// converted to C++ values, Draft objects built.
//
// Safety rules, followed by every entry point:
// * No raw pointer into a Python object is kept across anything that can run Python code (a token's
//   __index__, a request id's __hash__ or __eq__, a flag's __bool__, a finalizer). A list or tuple of
//   exact ints is read in place (converting those runs no Python code); any other sequence is first
//   copied into a tuple that holds its items. Integer arrays (numpy, anything with DLPack or the
//   buffer protocol) are held as nanobind ndarrays, which own a reference and the export (numpy
//   refuses to resize an exported array), and are read in place: vLLM's token buffer is never copied,
//   only the tokens a row adds are converted.
// * Every entry point holds the cache's busy flag: a call that arrives while another one runs on the
//   same cache (from Python code the running call ran, or from another thread meanwhile) raises
//   RuntimeError and changes nothing.
// * Inputs are checked and converted before the state changes (the whole batch of sync_and_draft
//   too), so bad input raises with nothing applied; only MemoryError, or OverflowError from a trie
//   that is full, can stop an update half-way.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <cstdint>
#include <string>
#include <vector>

#include "batch.h"
#include "cache.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace arctic_suffix {
namespace {

using Array = nb::ndarray<nb::ro>;

// Interned names and the empty tuple, made once at import (never freed, like the module).
struct Names {
  PyObject* token_ids;
  PyObject* probs;
  PyObject* score;
  PyObject* match_len;
  PyObject* source;
  PyObject* local;
  PyObject* global;
  PyObject* none;
  PyObject* empty_tuple;
};
Names names;

[[noreturn]] void raise() { throw nb::python_error(); }

[[noreturn]] void raise_key_error(nb::handle key) {
  PyObject* args = PyTuple_Pack(1, key.ptr());  // KeyError(key): a tuple id stays one argument
  if (args != nullptr) {
    PyErr_SetObject(PyExc_KeyError, args);
    Py_DECREF(args);
  }
  raise();
}

// A Python int clamped to long long; *exact is false when it did not fit.
long long clamped(PyObject* integer, bool* exact) {
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(integer, &overflow);
  if (value == -1 && PyErr_Occurred()) raise();
  if (exact != nullptr) *exact = overflow == 0;
  return overflow > 0 ? LLONG_MAX : overflow < 0 ? LLONG_MIN : value;
}

// obj.__index__() (TypeError for a non-integer). Python code may run.
nb::object as_index(nb::handle obj) {
  PyObject* value = PyNumber_Index(obj.ptr());
  if (value == nullptr) raise();
  return nb::steal(value);
}

// Item i of a tuple (borrowed from it: valid while the tuple is held).
nb::handle item(const nb::tuple& t, size_t i) { return PyTuple_GET_ITEM(t.ptr(), static_cast<Py_ssize_t>(i)); }

// The items of any iterable, in a new tuple that holds them (TypeError like a for loop).
nb::tuple snapshot(nb::handle obj) {
  PyObject* tuple = PySequence_Tuple(obj.ptr());
  if (tuple == nullptr) raise();
  return nb::steal<nb::tuple>(tuple);
}

[[noreturn]] void raise_token_range(const char* field, PyObject* value) {
  PyErr_Format(PyExc_OverflowError, "%s: token id %S does not fit in 32 bits (native suffix backend)", field, value);
  raise();
}

// An exact int as a token id (runs no Python code).
int32_t exact_token(PyObject* item, const char* field) {
  bool exact = true;
  const long long value = clamped(item, &exact);
  if (!exact || value < INT32_MIN || value > INT32_MAX) raise_token_range(field, item);
  return static_cast<int32_t>(value);
}

// Token ids of any iterable of integers, appended to `out` (nothing appended on error).
void append_tokens(nb::handle obj, const char* field, std::vector<int32_t>& out) {
  const size_t base = out.size();
  PyObject* o = obj.ptr();
  try {
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) {
      // Items that are exact ints convert without running Python code, so the list cannot change
      // while it is read; anything else goes through a snapshot.
      const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
      PyObject** items = PySequence_Fast_ITEMS(o);
      Py_ssize_t i = 0;
      while (i < n && PyLong_CheckExact(items[i])) ++i;
      if (i == n) {
        out.reserve(base + static_cast<size_t>(n));  // before reading: `items` stays valid
        for (i = 0; i < n; ++i) out.push_back(exact_token(items[i], field));
        return;
      }
    }
    const nb::tuple items = snapshot(obj);
    for (nb::handle item : items) {
      if (PyLong_CheckExact(item.ptr())) {
        out.push_back(exact_token(item.ptr(), field));
      } else {
        const nb::object value = as_index(item);
        out.push_back(exact_token(value.ptr(), field));
      }
    }
  } catch (...) {
    out.resize(base);
    throw;
  }
}

// None -> the configured cap; an integer -> min(it, the configured cap). Python code may run.
long long parse_cap(nb::handle arg, long long configured) {
  if (arg.is_none()) return configured;
  const nb::object value = as_index(arg);
  return std::min(clamped(value.ptr(), nullptr), configured);
}

// A buffer-protocol view that owns its export (released when it goes): while it is held the exporter
// stays alive and numpy refuses to resize the array.
class BufferView {
 public:
  BufferView() = default;
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  ~BufferView() {
    if (held_) PyBuffer_Release(&view_);
  }
  // false (no error) if `o` has no buffer to give.
  bool open(PyObject* o) {
    if (PyObject_GetBuffer(o, &view_, PyBUF_RECORDS_RO) < 0) {
      PyErr_Clear();
      return false;
    }
    held_ = true;
    return true;
  }
  const Py_buffer& view() const { return view_; }

 private:
  Py_buffer view_{};
  bool held_ = false;
};

// An integer array, viewed in place: through the buffer protocol (numpy: the cheap way) or, for an
// object with only DLPack (a CPU torch tensor), as a nanobind ndarray. Either one holds the array.
struct ArrayView {
  BufferView buffer;
  Array dlpack;
};

[[noreturn]] void raise_not_integers(const char* field, int ndim, const char* what) {
  PyErr_Format(PyExc_TypeError, "%s: expected a %d-D array of integers in CPU memory, got %s", field, ndim, what);
  raise();
}

bool open_buffer(PyObject* o, int ndim, const char* field, BufferView& buffer, IntTable& table) {
  if (!PyObject_CheckBuffer(o) || !buffer.open(o)) return false;
  const Py_buffer& v = buffer.view();
  const char* f = v.format != nullptr ? v.format : "B";
  if (*f == '@' || *f == '=' || *f == '<') ++f;  // native order: x86-64 and aarch64 are little-endian
  const bool integer = f[0] != '\0' && f[1] == '\0' && std::strchr("bBhHiIlLqQ", f[0]) != nullptr;
  if (!integer || v.ndim != ndim || v.itemsize > 8) {
    PyErr_Format(PyExc_TypeError,
                 "%s: expected a %d-D array of integers in CPU memory, got format '%s' with %d dimension(s)", field,
                 ndim, v.format != nullptr ? v.format : "B", v.ndim);
    raise();
  }
  table.data = static_cast<const char*>(v.buf);
  table.rows = v.shape[0];
  table.row_stride = v.strides[0];
  table.cols = ndim == 2 ? v.shape[1] : 1;
  table.col_stride = ndim == 2 ? v.strides[1] : 0;
  table.itemsize = static_cast<int>(v.itemsize);
  table.is_signed = std::islower(static_cast<unsigned char>(f[0])) != 0;
  return true;
}

bool open_dlpack(PyObject* o, int ndim, const char* field, Array& out, IntTable& table) {
  if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) return false;
  if (PyObject_HasAttrString(o, "__dlpack__") != 1 || !nb::try_cast(nb::handle(o), out, false)) return false;
  const nb::dlpack::dtype dt = out.dtype();
  const bool integer = (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Int) ||
                        dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::UInt)) &&
                       dt.lanes == 1 && (dt.bits == 8 || dt.bits == 16 || dt.bits == 32 || dt.bits == 64);
  if (!integer || static_cast<int>(out.ndim()) != ndim || out.device_type() != nb::device::cpu::value) {
    raise_not_integers(field, ndim, "another array (dtype, dimensions or device)");
  }
  const int64_t itemsize = dt.bits / 8;
  table.data = static_cast<const char*>(out.data());
  table.rows = static_cast<int64_t>(out.shape(0));
  table.row_stride = out.stride(0) * itemsize;
  table.cols = ndim == 2 ? static_cast<int64_t>(out.shape(1)) : 1;
  table.col_stride = ndim == 2 ? out.stride(1) * itemsize : 0;
  table.itemsize = static_cast<int>(itemsize);
  table.is_signed = dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Int);
  return true;
}

// `obj` as an integer array of `ndim` dimensions in CPU memory, held (and its data pinned) by `view`;
// false if it is no array at all (a Python sequence). TypeError for any other array.
bool open_array(nb::handle obj, int ndim, const char* field, ArrayView& view, IntTable& table) {
  return open_buffer(obj.ptr(), ndim, field, view.buffer, table) ||
         open_dlpack(obj.ptr(), ndim, field, view.dlpack, table);
}

// A 1-D table of integers (num_tokens, num_prompt_tokens): an array read in place or a snapshot.
class Column {
 public:
  Column(nb::handle obj, const char* field) : in_place_(open_array(obj, 1, field, array_, table_)) {
    if (!in_place_) items_ = snapshot(obj);
    size_ = in_place_ ? static_cast<size_t>(table_.rows) : items_.size();
  }
  size_t size() const { return size_; }
  // Item i (< size()) clamped to long long; when it did not fit, *exact is false and *big holds it.
  long long get(size_t i, bool* exact, nb::object* big) const {
    *exact = true;
    if (in_place_) return table_.at(static_cast<int64_t>(i), 0);
    const nb::object value = as_index(item(items_, i));
    const long long v = clamped(value.ptr(), exact);
    if (!*exact) *big = value;
    return v;
  }

 private:
  ArrayView array_;
  IntTable table_;
  bool in_place_;  // an array read in place; else items_, a snapshot of the sequence
  nb::tuple items_;
  size_t size_ = 0;
};

// The 2-D token table: vLLM's buffer read in place, or a snapshot of rows that are sequences.
class Rows {
 public:
  explicit Rows(nb::handle obj) : in_place_(open_array(obj, 2, "token_rows", array_, table_)) {
    if (!in_place_) items_ = snapshot(obj);
    size_ = in_place_ ? static_cast<size_t>(table_.rows) : items_.size();
  }
  size_t size() const { return size_; }
  // Row i's columns [lo, hi), clamped like a slice, appended to `out`; how many.
  size_t append(size_t i, long long lo, long long hi, std::vector<int32_t>& out) const {
    const size_t before = out.size();
    if (in_place_) {
      append_row_tokens(table_, static_cast<int64_t>(i), lo, hi, "token_rows", out);
    } else {
      const Py_ssize_t a = static_cast<Py_ssize_t>(std::clamp<long long>(lo, 0, PY_SSIZE_T_MAX));
      const Py_ssize_t b = static_cast<Py_ssize_t>(std::clamp<long long>(hi, 0, PY_SSIZE_T_MAX));
      PyObject* slice = PySequence_GetSlice(item(items_, i).ptr(), a, b);
      if (slice == nullptr) raise();
      append_tokens(nb::steal(slice), "token_rows", out);
    }
    return out.size() - before;
  }

 private:
  ArrayView array_;
  IntTable table_;
  bool in_place_;  // an array read in place; else items_, a snapshot of the rows
  nb::tuple items_;
  size_t size_ = 0;
};

constexpr long long kSmall = 1LL << 62;  // |a|, |b| below this: a - 1 - b cannot overflow

// min(cap, max_model_len - 1 - count), exact for integers of any size.
long long room_of(long long cap, long long max_len, bool max_len_exact, const nb::object& max_len_obj,
                  long long count, bool count_exact, const nb::object& count_obj) {
  if (max_len_exact && count_exact && max_len > -kSmall && max_len < kSmall && count > -kSmall &&
      count < kSmall) {
    return std::min(cap, max_len - 1 - count);
  }
  const nb::object m = max_len_exact ? nb::steal(PyLong_FromLongLong(max_len)) : max_len_obj;
  const nb::object c = count_exact ? nb::steal(PyLong_FromLongLong(count)) : count_obj;
  if (!m.is_valid() || !c.is_valid()) raise();
  PyObject* diff = PyNumber_Subtract(m.ptr(), c.ptr());
  if (diff == nullptr) raise();
  const nb::object d = nb::steal(diff);
  const long long room = clamped(d.ptr(), nullptr);
  return std::min(cap, room == LLONG_MIN ? room : room - 1);
}

PyObject* int_list(const int32_t* values, size_t n) {
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(n));
  if (list == nullptr) raise();
  for (size_t i = 0; i < n; ++i) {
    PyObject* item = PyLong_FromLong(values[i]);
    if (item == nullptr) {
      Py_DECREF(list);
      raise();
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
  }
  return list;
}

class PyCache {
 public:
  PyCache(int max_depth, long max_spec_tokens, double max_spec_factor, double max_spec_offset,
          double min_token_prob, int64_t max_cached_requests, nb::handle draft_type)
      : core_(make_config(max_depth, max_spec_tokens, max_spec_factor, max_spec_offset, min_token_prob,
                          max_cached_requests)),
        draft_type_(nb::borrow(draft_type)) {
    if (!PyType_Check(draft_type.ptr())) throw nb::type_error("draft_type: must be a class");
  }

  // ---- requests

  void start_request(nb::handle req_id, nb::handle prompt_ids) {
    Busy busy(*this, "start_request");
    const int present = PyDict_Contains(ids_.ptr(), req_id.ptr());
    if (present < 0) raise();
    if (present) {
      PyErr_Format(PyExc_ValueError, "request %R is already active", req_id.ptr());
      raise();
    }
    tokens_.clear();
    append_tokens(prompt_ids, "prompt_ids", tokens_);
    const SuffixCache::Slot slot = core_.start(tokens_.data(), tokens_.size());
    register_slot(req_id, slot);
  }

  void add_tokens(nb::handle req_id, nb::handle token_ids) {
    Busy busy(*this, "add_tokens");
    const SuffixCache::Slot slot = lookup(req_id);  // KeyError first, like the reference
    core_.prefetch(slot);  // these lines arrive while the tokens are converted
    tokens_.clear();
    append_tokens(token_ids, "token_ids", tokens_);
    core_.extend(slot, tokens_.data(), tokens_.size());
  }

  void stop_request(nb::handle req_id, nb::handle cache_response) {
    Busy busy(*this, "stop_request");
    const int keep = PyObject_IsTrue(cache_response.ptr());
    if (keep < 0) raise();
    const SuffixCache::Slot slot = lookup(req_id);
    if (PyDict_DelItem(ids_.ptr(), req_id.ptr()) < 0) raise();
    dropped_.clear();
    SuffixCache::Key key;
    try {
      key = core_.stop(slot, keep != 0, dropped_);
    } catch (...) {
      register_slot(req_id, slot);
      throw;
    }
    if (key != SuffixCache::kNoKey) remember_response(req_id, key);
    forget_dropped();
  }

  bool evict_response(nb::handle req_id) {
    Busy busy(*this, "evict_response");
    PyObject* key_obj = PyDict_GetItemWithError(cached_ids_.ptr(), req_id.ptr());  // borrowed, used at once
    if (key_obj == nullptr) {
      if (PyErr_Occurred()) raise();
      return false;
    }
    const SuffixCache::Key key = PyLong_AsUnsignedLongLong(key_obj);
    core_.evict(key);
    forget_response(req_id, key);
    return true;
  }

  // ---- drafts

  nb::object speculate(nb::handle req_id, nb::handle max_spec_tokens) {
    Busy busy(*this, "speculate");
    const long long cap = parse_cap(max_spec_tokens, core_.config().max_spec_tokens);
    return make_draft(core_.draft(lookup(req_id), cap));
  }

  nb::object sync_and_draft(nb::handle req_ids, nb::handle token_rows, nb::handle num_tokens,
                            nb::handle num_prompt_tokens, nb::handle sampled, nb::handle max_spec_tokens,
                            nb::handle max_model_len) {
    Busy busy(*this, "sync_and_draft");
    // 1. Everything that reads Python objects or may run Python code, and every check: nothing changes.
    const long long cap = parse_cap(max_spec_tokens, core_.config().max_spec_tokens);
    const nb::object max_len_obj = as_index(max_model_len);
    bool max_len_exact = true;
    const long long max_len = clamped(max_len_obj.ptr(), &max_len_exact);
    const nb::tuple ids = snapshot(req_ids);
    const size_t n = ids.size();
    const Rows rows(token_rows);
    const Column counts(num_tokens, "num_tokens");
    const Column prompts(num_prompt_tokens, "num_prompt_tokens");
    const nb::tuple flags = snapshot(sampled);
    check_rows("token_rows", rows.size(), n);
    check_rows("num_tokens", counts.size(), n);
    check_rows("num_prompt_tokens", prompts.size(), n);
    check_rows("sampled", flags.size(), n);
    batch_.clear();
    tokens_.clear();
    const nb::dict new_rows;  // request id -> row, for the requests this step starts
    seen_.assign(core_.slot_capacity(), -1);
    for (size_t i = 0; i < n; ++i) {
      BatchRow row;
      const int flag = PyObject_IsTrue(item(flags, i).ptr());
      if (flag < 0) raise();
      row.sampled = flag != 0;
      if (row.sampled) plan_row(i, item(ids, i), rows, counts, prompts, cap, max_len, max_len_exact, max_len_obj,
                                new_rows, row);
      batch_.push_back(row);
    }
    // 2. The C++ step; 3. the new requests' ids and evicted responses recorded, the drafts returned.
    try {
      run_batch(core_, batch_, tokens_, drafts_, offsets_);
    } catch (...) {
      record_started(ids);
      throw;
    }
    record_started(ids);
    PyObject* out = PyList_New(static_cast<Py_ssize_t>(n));
    if (out == nullptr) raise();
    const nb::object result = nb::steal(out);
    for (size_t i = 0; i < n; ++i) {
      PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), int_list(drafts_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]));
    }
    return result;
  }

  // ---- queries

  size_t num_active_requests() {
    Busy busy(*this, "num_active_requests");
    return core_.num_active();
  }
  nb::object active_requests() {
    Busy busy(*this, "active_requests");
    PyObject* set = PyFrozenSet_New(ids_.ptr());
    if (set == nullptr) raise();
    return nb::steal(set);
  }
  size_t num_cached_responses() {
    Busy busy(*this, "num_cached_responses");
    return core_.num_cached();
  }
  nb::tuple memory() {
    Busy busy(*this, "memory");
    const Memory m = core_.memory();
    return nb::make_tuple(m.local_trees, m.local_nodes, m.cached_responses, m.cached_tokens, m.global_nodes,
                          m.bytes_per_node, m.allocated_bytes);
  }

  // ---- tests only

  nb::object tokens(nb::handle req_id) {
    Busy busy(*this, "_tokens");
    const std::vector<int32_t>& t = core_.tokens(lookup(req_id));
    return nb::steal(int_list(t.data(), t.size()));
  }
  void advance_stamp_clock(nb::handle value) {
    Busy busy(*this, "_advance_stamp_clock");
    const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
    if (PyErr_Occurred()) raise();
    if (v > kStampMax) throw std::overflow_error("a stamp is 32 bits");
    core_.advance_stamp_clock(static_cast<uint32_t>(v));
  }

  // ---- garbage collection (request ids may refer back to the cache)

  int traverse(visitproc visit, void* arg) {
    Py_VISIT(ids_.ptr());
    Py_VISIT(cached_ids_.ptr());
    Py_VISIT(key_ids_.ptr());
    Py_VISIT(draft_type_.ptr());
    return 0;
  }
  void clear() {
    ids_.reset();
    cached_ids_.reset();
    key_ids_.reset();
    draft_type_.reset();
  }

 private:
  // The busy flag for one entry point (see the header comment).
  class Busy {
   public:
    Busy(PyCache& cache, const char* method) : cache_(cache) {
      if (cache.busy_) {
        PyErr_Format(PyExc_RuntimeError,
                     "SuffixDecodingCache.%s: another call on this cache is still running (a re-entrant call "
                     "from Python code that call ran, such as a token's __index__ or a request id's __hash__, "
                     "or a call from another thread); the cache allows one call at a time",
                     method);
        raise();
      }
      if (!cache.ids_.is_valid()) {
        PyErr_Format(PyExc_RuntimeError, "SuffixDecodingCache.%s: the cache was cleared by the garbage collector",
                     method);
        raise();
      }
      cache.busy_ = true;
    }
    ~Busy() { cache_.busy_ = false; }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

   private:
    PyCache& cache_;
  };

  static Config make_config(int max_depth, long max_spec_tokens, double factor, double offset, double min_prob,
                            int64_t max_cached) {
    Config c;
    c.max_depth = max_depth;
    c.max_spec_tokens = max_spec_tokens;
    c.max_spec_factor = factor;
    c.max_spec_offset = offset;
    c.min_token_prob = min_prob;
    c.max_cached_requests = max_cached;
    c.compensated_sum = PY_VERSION_HEX >= 0x030C0000;  // sum() of floats is Neumaier's from 3.12 on
    return c;
  }

  static void check_rows(const char* field, size_t have, size_t n) {
    if (have < n) {
      PyErr_Format(PyExc_ValueError, "%s: %zu rows for %zu request ids (one row per request id needed)", field, have,
                   n);
      raise();
    }
  }

  // The active request `req_id`'s slot, or -1. Python code may run (__hash__, __eq__).
  long long find(nb::handle req_id) const {
    PyObject* slot = PyDict_GetItemWithError(ids_.ptr(), req_id.ptr());  // borrowed, used at once
    if (slot == nullptr) {
      if (PyErr_Occurred()) raise();
      return -1;
    }
    return static_cast<long long>(PyLong_AsUnsignedLong(slot));
  }

  SuffixCache::Slot lookup(nb::handle req_id) const {
    const long long slot = find(req_id);
    if (slot < 0) raise_key_error(req_id);
    return static_cast<SuffixCache::Slot>(slot);
  }

  // ids[req_id] = slot; if that fails, the request just started is taken out again.
  void register_slot(nb::handle req_id, SuffixCache::Slot slot) {
    PyObject* value = PyLong_FromUnsignedLong(slot);
    const int rc = value == nullptr ? -1 : PyDict_SetItem(ids_.ptr(), req_id.ptr(), value);
    Py_XDECREF(value);
    if (rc < 0) {
      {
        nb::error_scope scope;  // keep the error while the request is taken out
        std::vector<SuffixCache::Key> none;
        core_.stop(slot, false, none);
      }
      raise();
    }
  }

  void remember_response(nb::handle req_id, SuffixCache::Key key) {
    PyObject* key_obj = PyLong_FromUnsignedLongLong(key);
    if (key_obj == nullptr || PyDict_SetItem(cached_ids_.ptr(), req_id.ptr(), key_obj) < 0 ||
        PyDict_SetItem(key_ids_.ptr(), key_obj, req_id.ptr()) < 0) {
      PyErr_Clear();  // the response is held all the same; only evict_response(req_id) cannot find it
    }
    Py_XDECREF(key_obj);
  }

  // Response `key` of `req_id` left the global trie: forget req_id -> key only if it still names it.
  void forget_response(nb::handle req_id, SuffixCache::Key key) {
    PyObject* key_obj = PyLong_FromUnsignedLongLong(key);
    if (key_obj != nullptr) {
      PyObject* current = PyDict_GetItemWithError(cached_ids_.ptr(), req_id.ptr());
      if (current != nullptr && PyObject_RichCompareBool(current, key_obj, Py_EQ) == 1) {
        PyDict_DelItem(cached_ids_.ptr(), req_id.ptr());
      }
      if (PyDict_Contains(key_ids_.ptr(), key_obj) == 1) PyDict_DelItem(key_ids_.ptr(), key_obj);
      Py_DECREF(key_obj);
    }
    PyErr_Clear();  // a failing __eq__/__hash__ must not leak out of here: the trie is updated already
  }

  void forget_dropped() {
    for (const SuffixCache::Key key : dropped_) {
      PyObject* key_obj = PyLong_FromUnsignedLongLong(key);
      PyObject* req_id = key_obj == nullptr ? nullptr : PyDict_GetItemWithError(key_ids_.ptr(), key_obj);
      if (req_id != nullptr) {
        const nb::object held = nb::borrow(req_id);
        forget_response(held, key);
      }
      Py_XDECREF(key_obj);
      PyErr_Clear();
    }
  }

  // Row i of sync_and_draft, sampled: which request, which tokens to add (converted into tokens_ now),
  // how long a draft may be.
  void plan_row(size_t i, nb::handle req_id, const Rows& rows, const Column& counts, const Column& prompts,
                long long cap, long long max_len, bool max_len_exact, const nb::object& max_len_obj,
                const nb::dict& new_rows, BatchRow& row) {
    bool count_exact = true;
    nb::object count_big;
    const long long count = counts.get(i, &count_exact, &count_big);
    const long long slot = find(req_id);
    if (slot >= 0) {
      const long long first = seen_[static_cast<size_t>(slot)];
      if (first >= 0) duplicate(req_id, static_cast<size_t>(first), i);
    } else {
      PyObject* first = PyDict_GetItemWithError(new_rows.ptr(), req_id.ptr());
      if (first != nullptr) duplicate(req_id, PyLong_AsSize_t(first), i);
      if (PyErr_Occurred()) raise();
    }
    row.offset = tokens_.size();
    long long have;
    if (slot < 0) {  // not seen yet, or seen again after it left: started from its prompt
      bool prompt_exact = true;
      nb::object prompt_big;
      const long long prompt = prompts.get(i, &prompt_exact, &prompt_big);
      PyObject* key = PyDict_GetItemWithError(cached_ids_.ptr(), req_id.ptr());  // borrowed, used at once
      if (key != nullptr) row.evict = PyLong_AsUnsignedLongLong(key);
      if (PyErr_Occurred()) raise();
      row.start = true;
      row.prompt = rows.append(i, 0, std::max(prompt, 0LL), tokens_);
      have = static_cast<long long>(row.prompt);
      PyObject* index = PyLong_FromSize_t(i);
      if (index == nullptr || PyDict_SetItem(new_rows.ptr(), req_id.ptr(), index) < 0) {
        Py_XDECREF(index);
        raise();
      }
      Py_DECREF(index);
    } else {
      row.slot = static_cast<SuffixCache::Slot>(slot);
      core_.prefetch(row.slot);  // its active nodes, needed when the batch is applied
      seen_[static_cast<size_t>(slot)] = static_cast<long long>(i);
      have = static_cast<long long>(core_.tokens(row.slot).size());
    }
    if (count > have) row.extra = rows.append(i, have, count, tokens_);
    row.room = room_of(cap, max_len, max_len_exact, max_len_obj, count, count_exact, count_big);
  }

  [[noreturn]] static void duplicate(nb::handle req_id, size_t first, size_t i) {
    PyErr_Format(PyExc_ValueError, "req_ids: request %R appears in rows %zu and %zu (each request once per step)",
                 req_id.ptr(), first, i);
    raise();
  }

  // After run_batch (finished or not): the requests it started get their ids, evicted responses are
  // forgotten. Runs before any error from run_batch is raised.
  void record_started(const nb::tuple& ids) {
    for (size_t i = 0; i < batch_.size(); ++i) {
      const BatchRow& row = batch_[i];
      if (row.evicted) forget_response(item(ids, i), row.evict);
      if (!row.started) continue;
      try {
        register_slot(item(ids, i), row.slot);
      } catch (const nb::python_error&) {
        // MemoryError while recording: that request was taken out again; the rest go on.
      }
    }
  }

  nb::object make_draft(const DraftOut& d) const {
    PyTypeObject* type = reinterpret_cast<PyTypeObject*>(draft_type_.ptr());
    // Built the way the dataclass's own __init__ does it (object.__new__, then object.__setattr__ per
    // field), without its Python-level call: Draft is a plain frozen dataclass with no __post_init__
    // (tree.py says so and a test checks it).
    PyObject* obj = type->tp_new(type, names.empty_tuple, nullptr);
    if (obj == nullptr) raise();
    const nb::object draft = nb::steal(obj);
    PyObject* source = d.source == kLocal ? names.local : d.source == kGlobal ? names.global : names.none;
    set_field(obj, names.token_ids, int_list(d.tokens.data(), d.tokens.size()));
    PyObject* probs = PyList_New(static_cast<Py_ssize_t>(d.probs.size()));
    if (probs == nullptr) raise();
    for (size_t i = 0; i < d.probs.size(); ++i) {
      PyObject* p = PyFloat_FromDouble(d.probs[i]);
      if (p == nullptr) {
        Py_DECREF(probs);
        raise();
      }
      PyList_SET_ITEM(probs, static_cast<Py_ssize_t>(i), p);
    }
    set_field(obj, names.probs, probs);
    set_field(obj, names.score, PyFloat_FromDouble(d.score));
    set_field(obj, names.match_len, PyLong_FromLong(d.match_len));
    Py_INCREF(source);
    set_field(obj, names.source, source);
    return draft;
  }

  static void set_field(PyObject* obj, PyObject* name, PyObject* value) {  // steals `value`
    if (value == nullptr) raise();
    const int rc = PyObject_GenericSetAttr(obj, name, value);
    Py_DECREF(value);
    if (rc < 0) raise();
  }

  SuffixCache core_;
  nb::dict ids_;         // request id -> slot of the active requests
  nb::dict cached_ids_;  // request id -> key of its latest finished response still in the global trie
  nb::dict key_ids_;     // key -> request id of every finished response in the global trie
  nb::object draft_type_;
  bool busy_ = false;
  // scratch
  std::vector<int32_t> tokens_;
  std::vector<BatchRow> batch_;
  std::vector<int32_t> drafts_;
  std::vector<size_t> offsets_;
  std::vector<SuffixCache::Key> dropped_;
  std::vector<long long> seen_;  // slot -> the row of this step that names it (duplicate ids)
};

int cache_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!nb::inst_ready(self)) return 0;
  return nb::inst_ptr<PyCache>(self)->traverse(visit, arg);
}

int cache_clear(PyObject* self) {
  if (nb::inst_ready(self)) nb::inst_ptr<PyCache>(self)->clear();
  return 0;
}

PyType_Slot cache_slots[] = {
    {Py_tp_traverse, reinterpret_cast<void*>(cache_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(cache_clear)},
    {0, nullptr},
};

PyObject* intern(const char* text) {
  PyObject* s = PyUnicode_InternFromString(text);
  if (s == nullptr) raise();
  return s;
}

}  // namespace
}  // namespace arctic_suffix

NB_MODULE(_native, m) {
  using arctic_suffix::PyCache;
  using arctic_suffix::names;
  names.token_ids = arctic_suffix::intern("token_ids");
  names.probs = arctic_suffix::intern("probs");
  names.score = arctic_suffix::intern("score");
  names.match_len = arctic_suffix::intern("match_len");
  names.source = arctic_suffix::intern("source");
  names.local = arctic_suffix::intern("local");
  names.global = arctic_suffix::intern("global");
  names.none = arctic_suffix::intern("none");
  names.empty_tuple = PyTuple_New(0);
  if (names.empty_tuple == nullptr) throw nb::python_error();

  m.doc() = "Native (C++) backend of arctic_runtime.suffix.SuffixDecodingCache; use that class, not this module.";
  m.attr("BYTES_PER_NODE") = sizeof(arctic_suffix::Node);
  nb::class_<PyCache>(m, "Cache", nb::type_slots(arctic_suffix::cache_slots),
                      "The whole suffix decoding cache in C++ (see arctic_runtime.suffix).")
      .def(nb::init<int, long, double, double, double, int64_t, nb::handle>(), "max_depth"_a, "max_spec_tokens"_a,
           "max_spec_factor"_a, "max_spec_offset"_a, "min_token_prob"_a, "max_cached_requests"_a, "draft_type"_a.none())
      .def("start_request", &PyCache::start_request, "req_id"_a.none(), "prompt_ids"_a.none())
      .def("add_tokens", &PyCache::add_tokens, "req_id"_a.none(), "token_ids"_a.none())
      .def("stop_request", &PyCache::stop_request, "req_id"_a.none(), "cache_response"_a.none() = true)
      .def("evict_response", &PyCache::evict_response, "req_id"_a.none())
      .def("speculate", &PyCache::speculate, "req_id"_a.none(), "max_spec_tokens"_a.none() = nb::none())
      .def("sync_and_draft", &PyCache::sync_and_draft, "req_ids"_a.none(), "token_rows"_a.none(), "num_tokens"_a.none(),
           "num_prompt_tokens"_a.none(), "sampled"_a.none(), "max_spec_tokens"_a.none(), "max_model_len"_a.none())
      .def("num_active_requests", &PyCache::num_active_requests)
      .def("active_requests", &PyCache::active_requests)
      .def("num_cached_responses", &PyCache::num_cached_responses)
      .def("memory", &PyCache::memory)
      .def("_tokens", &PyCache::tokens, "req_id"_a.none(), "Tests only: the request's tokens in its local trie.")
      .def("_advance_stamp_clock", &PyCache::advance_stamp_clock, "value"_a,
           "Tests only: move every trie's recency clock on to value (never back).");
}
