// managers.hpp: Manager and its proxies: lists, dicts, values and namespaces held by a server
// process and shared by every process that has a proxy, on this machine or across the network
// (Python: multiprocessing/managers.py, SyncManager and BaseManager).
//
// Design (see docs/managers.md):
//   - mp::Manager starts a server process (any start method) listening on a socket with an
//     authkey: by default a fresh abstract Unix socket and a random key; ManagerOptions
//     ::address = "host:port" serves over TCP for other programs (Manager::connect).
//   - list/dict/Value/Namespace live in the server, stored as codec messages. A proxy is a
//     cheap copyable handle (the server's address, key and the object's id); it passes to child
//     processes under every start method, where it reconnects on first use. Each process keeps
//     one connection per server, shared by all its proxies, so its calls are carried out in
//     the order it made them.
//   - Pipelining: mutations that return nothing (append, extend, set, insert, clear, update,
//     Value::set, Namespace::set) are queued and sent in batches without waiting. A batch goes
//     out at the next call that returns something (which sees every earlier write of this
//     process), at flush(), when it holds 64 KiB, when a write finds it older than 1 ms, when
//     the last handle of the proxy goes away, and when a library-started child exits (before
//     its parent can join it). An error of a pipelined write (an index out of range, ...) is
//     thrown by this process's next synchronous call on that manager, instead of that call's
//     result (the call itself was carried out). To make writes visible to another process that
//     you signal through a Lock/Event/Queue, call flush() first.
//   - Queue/Lock/RLock/Event/Semaphore/Barrier are the library's shared-memory primitives
//     (mp::Queue, mp::Lock, ...), made by the manager's process and handed out: they pass to
//     children like any of them and are much faster than server-side objects. Only a Manager
//     that started its server makes them (a connected client cannot: std::logic_error).
//   - Errors: a server that is shut down or dead makes every proxy call throw
//     mp::ManagerError (an mp::ProcessError) naming the address; a server that does not answer
//     within ManagerOptions::timeout throws mp::TimeoutError. Nothing waits without limit.
//     Index errors are std::out_of_range, a missing value for remove()/index() is
//     mp::ValueError, a value of another type mp::TypeError, a message above the maximum
//     message size mp::ValueError (refused before it is sent; the server also refuses it
//     before allocating it).
//   - Values compare by their encoding (remove, index, count, contains, dict keys): equal
//     values of the codec's types encode alike, except floating-point -0.0/0.0 and NaNs, and
//     unordered containers whose iteration order differs.
//   - Thread-safe: proxies may be used from several threads (calls are serialized per
//     connection).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "multiprocessing/context.hpp"
#include "multiprocessing/errors.hpp"
#include "multiprocessing/process.hpp"
#include "multiprocessing/queues.hpp"
#include "multiprocessing/reduction.hpp"
#include "multiprocessing/synchronize.hpp"

namespace multiprocessing {

/// A manager's server is shut down, died, or broke the protocol (Python: the EOFError /
/// ConnectionRefusedError a proxy raises after shutdown). The message names the address.
class ManagerError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// Options of a Manager, for designated initializers.
struct ManagerOptions {
  /// Where the server listens: empty for a fresh abstract Unix socket (this machine only);
  /// "host:port" for TCP ("127.0.0.1:0" picks a free port: see Manager::address()); a path
  /// for a Unix socket file.
  std::string address;
  /// The key every client must prove it knows (Python's authkey). Unset: 32 random bytes.
  std::optional<std::string> authkey;
  /// The largest message the server accepts and a client sends (default 64 MiB).
  std::size_t max_message_size = std::size_t{64} << 20;
  /// How long a call waits for the server's answer (and for it to start) before
  /// mp::TimeoutError.
  std::chrono::milliseconds timeout{30'000};
  /// The server's start method; unset: the process-wide default.
  std::optional<StartMethod> start_method;
};

namespace detail::mgr {

enum class Kind : std::uint8_t { list = 1, dict = 2, value = 3, ns = 4 };

enum class Op : std::uint8_t {
  hello = 1, ping, shutdown, create,
  list_append = 16, list_extend, list_get, list_set, list_pop, list_insert, list_remove,
  list_index, list_count, list_clear, list_size, list_copy,
  dict_set = 48, dict_get, dict_contains, dict_erase, dict_keys, dict_values, dict_items,
  dict_size, dict_clear, dict_update, dict_setdefault,
  value_get = 80, value_set,
};

/// What a proxy carries: how to reach the server, and which object it names.
struct Ref {
  std::string address;
  std::string authkey;
  std::uint64_t id = 0;
  std::int64_t timeout_ms = 30'000;
  std::uint64_t max_message_size = std::uint64_t{64} << 20;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(address, authkey, id, timeout_ms, max_message_size);
  }
};

/// The answer of a synchronous call.
struct Result {
  std::int64_t n = 0;
  std::vector<std::string> blobs;
};

/// Queues a write (pipelined: see the file comment). Throws mp::ValueError for an oversize
/// request, mp::ManagerError when the server is gone.
void post(const Ref& ref, Op op, std::int64_t n, std::initializer_list<std::string_view> blobs);
void post(const Ref& ref, Op op, std::int64_t n, const std::vector<std::string>& blobs);
/// Sends every queued write and the call, and waits for its answer.
Result call(const Ref& ref, Op op, std::int64_t n = 0, std::initializer_list<std::string_view> blobs = {});
/// Sends the queued writes and waits until the server has carried them out; throws the error
/// of any failed one.
void flush(const Ref& ref);
/// Creates (or, with a name, gets or creates) an object of `kind`; returns its id.
std::uint64_t create(const Ref& server, Kind kind, const std::string& name,
                     std::vector<std::uint64_t> tags, std::string initial);
/// Called when a proxy's last handle in this process goes away: sends the queued writes and
/// waits for them (never throws; an error is reported on stderr).
void release(const Ref& ref) noexcept;

/// The shared part of a proxy's handles: flushes on destruction.
struct Handle {
  Ref ref;
  explicit Handle(Ref r) : ref(std::move(r)) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { release(ref); }
};

// ---- Python-like printing (repr) ----

template <class T, class = void>
struct has_ostream : std::false_type {};
template <class T>
struct has_ostream<T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>>
    : std::true_type {};
template <class T, class = void>
struct is_range : std::false_type {};
template <class T>
struct is_range<T, std::void_t<decltype(std::begin(std::declval<const T&>())),
                               decltype(std::end(std::declval<const T&>()))>> : std::true_type {};
template <class T, class = void>
struct is_mapping : std::false_type {};
template <class T>
struct is_mapping<T, std::void_t<typename T::key_type, typename T::mapped_type>> : std::true_type {};
template <class T, class = void>
struct is_setlike : std::false_type {};
template <class T>
struct is_setlike<T, std::void_t<typename T::key_type>>
    : std::bool_constant<!is_mapping<T>::value> {};
template <class T>
struct is_tuple_like : std::false_type {};
template <class... A>
struct is_tuple_like<std::tuple<A...>> : std::true_type {};
template <class A, class B>
struct is_tuple_like<std::pair<A, B>> : std::true_type {};
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

void repr_string(std::ostream& os, std::string_view s);
void repr_double(std::ostream& os, double d);

/// Writes `v` as Python's repr() would write the corresponding Python value: True/False,
/// numbers, 'strings', [lists], {dicts}, {sets}, (tuples), None for an empty optional. Other
/// types use their operator<<, or "<TypeName object>".
template <class T>
void repr(std::ostream& os, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "True" : "False");
  } else if constexpr (std::is_same_v<T, char> || std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char>) {
    os << static_cast<int>(v);
  } else if constexpr (std::is_integral_v<T>) {
    os << v;
  } else if constexpr (std::is_floating_point_v<T>) {
    repr_double(os, static_cast<double>(v));
  } else if constexpr (std::is_enum_v<T>) {
    os << static_cast<std::underlying_type_t<T>>(v);
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    repr_string(os, std::string_view(v));
  } else if constexpr (is_optional<T>::value) {
    if (v) repr(os, *v); else os << "None";
  } else if constexpr (is_tuple_like<T>::value) {
    os << '(';
    std::apply([&os](const auto&... e) {
      std::size_t i = 0;
      ((os << (i++ ? ", " : ""), repr(os, e)), ...);
    }, v);
    if constexpr (std::tuple_size_v<T> == 1) os << ',';
    os << ')';
  } else if constexpr (is_mapping<T>::value) {
    os << '{';
    bool first = true;
    for (const auto& [k, x] : v) {
      if (!first) os << ", ";
      first = false;
      repr(os, k);
      os << ": ";
      repr(os, x);
    }
    os << '}';
  } else if constexpr (is_setlike<T>::value) {
    if (std::begin(v) == std::end(v)) { os << "set()"; return; }
    os << '{';
    bool first = true;
    for (const auto& x : v) { if (!first) os << ", "; first = false; repr(os, x); }
    os << '}';
  } else if constexpr (is_range<T>::value) {
    os << '[';
    bool first = true;
    for (const auto& x : v) { if (!first) os << ", "; first = false; repr(os, x); }
    os << ']';
  } else if constexpr (has_ostream<T>::value) {
    os << v;
  } else {
    os << '<' << reduction::type_name<T>() << " object>";
  }
}

template <class T>
std::string encode(const T& v) {
  return reduction::dumps(v);
}
template <class T>
T decode(const std::string& s) {
  return reduction::loads<T>(s);
}

}  // namespace detail::mgr

/// A snapshot iterator: the values a proxy held when iteration began.
template <class T>
class SnapshotIterator {
 public:
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  SnapshotIterator() = default;
  explicit SnapshotIterator(std::shared_ptr<const std::vector<T>> v) : v_(std::move(v)) {}
  const T& operator*() const { return (*v_)[i_]; }
  const T* operator->() const { return &(*v_)[i_]; }
  SnapshotIterator& operator++() { ++i_; return *this; }
  SnapshotIterator operator++(int) { auto c = *this; ++i_; return c; }
  struct Sentinel {};
  friend bool operator==(const SnapshotIterator& it, Sentinel) noexcept {
    return !it.v_ || it.i_ >= it.v_->size();
  }

 private:
  std::shared_ptr<const std::vector<T>> v_;
  std::size_t i_ = 0;
};

/// Common part of the proxies: the handle and flush().
class BaseProxy {
 public:
  /// Sends this process's queued writes to the server and waits until they are carried out;
  /// throws the error of any that failed (ordered: the first one).
  void flush() const { detail::mgr::flush(h_->ref); }
  /// The server's address.
  const std::string& address() const noexcept { return h_->ref.address; }
  /// Codec: a proxy crosses as the server's address, key and the object's id.
  template <class Archive>
  void save(Archive& ar) const { ar(h_->ref); }
  template <class Archive>
  void load(Archive& ar) {
    detail::mgr::Ref r;
    ar(r);
    h_ = std::make_shared<detail::mgr::Handle>(std::move(r));
  }

 protected:
  BaseProxy() = default;
  explicit BaseProxy(detail::mgr::Ref r) : h_(std::make_shared<detail::mgr::Handle>(std::move(r))) {}
  const detail::mgr::Ref& ref() const noexcept { return h_->ref; }
  std::shared_ptr<detail::mgr::Handle> h_;
};

/// A list held by a manager (Python: ListProxy). Indexes may be negative (from the end), as in
/// Python. append/extend/set/insert/clear are pipelined (see the file comment).
template <class T>
class ListProxy : public BaseProxy {
  using Op = detail::mgr::Op;

 public:
  /// An unusable proxy (to be assigned, or received by the codec).
  ListProxy() = default;
  explicit ListProxy(detail::mgr::Ref r) : BaseProxy(std::move(r)) {}

  void append(const T& v) { detail::mgr::post(ref(), Op::list_append, 0, {detail::mgr::encode(v)}); }
  template <class R>
  void extend(const R& values) {
    std::vector<std::string> b;
    for (const auto& v : values) b.push_back(detail::mgr::encode(static_cast<const T&>(v)));
    detail::mgr::post(ref(), Op::list_extend, 0, b);
  }
  void extend(std::initializer_list<T> values) { extend(std::vector<T>(values)); }
  /// The element at `i` (negative: from the end); std::out_of_range outside.
  T get(std::int64_t i) const { return one(detail::mgr::call(ref(), Op::list_get, i)); }
  T operator[](std::int64_t i) const { return get(i); }
  void set(std::int64_t i, const T& v) { detail::mgr::post(ref(), Op::list_set, i, {detail::mgr::encode(v)}); }
  /// Removes and returns the element at `i` (default: the last); std::out_of_range when empty.
  T pop(std::int64_t i = -1) { return one(detail::mgr::call(ref(), Op::list_pop, i)); }
  /// Inserts before `i`, clamped as Python does.
  void insert(std::int64_t i, const T& v) { detail::mgr::post(ref(), Op::list_insert, i, {detail::mgr::encode(v)}); }
  /// Removes the first element equal to `v`; mp::ValueError when there is none.
  void remove(const T& v) { detail::mgr::call(ref(), Op::list_remove, 0, {detail::mgr::encode(v)}); }
  /// The index of the first element equal to `v`; mp::ValueError when there is none.
  std::size_t index(const T& v) const {
    return static_cast<std::size_t>(detail::mgr::call(ref(), Op::list_index, 0, {detail::mgr::encode(v)}).n);
  }
  std::size_t count(const T& v) const {
    return static_cast<std::size_t>(detail::mgr::call(ref(), Op::list_count, 0, {detail::mgr::encode(v)}).n);
  }
  void clear() { detail::mgr::post(ref(), Op::list_clear, 0, {}); }
  std::size_t size() const { return static_cast<std::size_t>(detail::mgr::call(ref(), Op::list_size).n); }
  bool empty() const { return size() == 0; }
  /// A copy of the whole list (Python: list(proxy) / proxy[:]).
  std::vector<T> copy() const {
    auto r = detail::mgr::call(ref(), Op::list_copy);
    std::vector<T> out;
    out.reserve(r.blobs.size());
    for (const auto& b : r.blobs) out.push_back(detail::mgr::decode<T>(b));
    return out;
  }
  /// Iteration over a snapshot taken by begin().
  SnapshotIterator<T> begin() const {
    return SnapshotIterator<T>(std::make_shared<const std::vector<T>>(copy()));
  }
  typename SnapshotIterator<T>::Sentinel end() const { return {}; }

  /// Prints like Python: [0, 1, 4], ['a', 'b'].
  friend std::ostream& operator<<(std::ostream& os, const ListProxy& l) {
    detail::mgr::repr(os, l.copy());
    return os;
  }

 private:
  static T one(const detail::mgr::Result& r) {
    if (r.blobs.size() != 1) throw ManagerError("multiprocessing: malformed manager reply");
    return detail::mgr::decode<T>(r.blobs[0]);
  }
};

/// A dict held by a manager, in insertion order (Python: DictProxy). set/update/clear are
/// pipelined (see the file comment).
template <class K, class V>
class DictProxy : public BaseProxy {
  using Op = detail::mgr::Op;

 public:
  DictProxy() = default;
  explicit DictProxy(detail::mgr::Ref r) : BaseProxy(std::move(r)) {}

  void set(const K& k, const V& v) {
    detail::mgr::post(ref(), Op::dict_set, 0, {detail::mgr::encode(k), detail::mgr::encode(v)});
  }
  /// The value of `k`, nullopt when absent.
  std::optional<V> get(const K& k) const {
    auto r = detail::mgr::call(ref(), Op::dict_get, 0, {detail::mgr::encode(k)});
    if (r.n == 0 || r.blobs.empty()) return std::nullopt;
    return detail::mgr::decode<V>(r.blobs[0]);
  }
  /// get(k), or `fallback` when absent (Python: d.get(k, default)).
  V get(const K& k, const V& fallback) const { return get(k).value_or(fallback); }
  /// The value of `k`; std::out_of_range when absent (Python: d[k], KeyError).
  V at(const K& k) const {
    auto v = get(k);
    if (!v) throw std::out_of_range("multiprocessing: key not in the managed dict");
    return *v;
  }
  bool contains(const K& k) const {
    return detail::mgr::call(ref(), Op::dict_contains, 0, {detail::mgr::encode(k)}).n != 0;
  }
  /// Removes `k`; false when it was absent (Python's `del d[k]` would raise KeyError).
  bool erase(const K& k) { return detail::mgr::call(ref(), Op::dict_erase, 0, {detail::mgr::encode(k)}).n != 0; }
  std::vector<K> keys() const { return decode_all<K>(detail::mgr::call(ref(), Op::dict_keys).blobs); }
  std::vector<V> values() const { return decode_all<V>(detail::mgr::call(ref(), Op::dict_values).blobs); }
  std::vector<std::pair<K, V>> items() const {
    auto r = detail::mgr::call(ref(), Op::dict_items);
    std::vector<std::pair<K, V>> out;
    out.reserve(r.blobs.size() / 2);
    for (std::size_t i = 0; i + 1 < r.blobs.size(); i += 2)
      out.emplace_back(detail::mgr::decode<K>(r.blobs[i]), detail::mgr::decode<V>(r.blobs[i + 1]));
    return out;
  }
  std::size_t size() const { return static_cast<std::size_t>(detail::mgr::call(ref(), Op::dict_size).n); }
  bool empty() const { return size() == 0; }
  void clear() { detail::mgr::post(ref(), Op::dict_clear, 0, {}); }
  /// Sets every (key, value) of `items` (a map, or a range of pairs), in order.
  template <class R>
  void update(const R& items) {
    std::vector<std::string> b;
    for (const auto& [k, v] : items) {
      b.push_back(detail::mgr::encode(static_cast<const K&>(k)));
      b.push_back(detail::mgr::encode(static_cast<const V&>(v)));
    }
    detail::mgr::post(ref(), Op::dict_update, 0, b);
  }
  void update(std::initializer_list<std::pair<K, V>> items) { update(std::vector<std::pair<K, V>>(items)); }
  /// The value of `k`, after setting it to `v` if it was absent (Python: setdefault).
  V setdefault(const K& k, const V& v) {
    auto r = detail::mgr::call(ref(), Op::dict_setdefault, 0, {detail::mgr::encode(k), detail::mgr::encode(v)});
    if (r.blobs.size() != 1) throw ManagerError("multiprocessing: malformed manager reply");
    return detail::mgr::decode<V>(r.blobs[0]);
  }
  /// A copy, in insertion order.
  std::vector<std::pair<K, V>> copy() const { return items(); }

  /// Prints like Python: {'k': 1}.
  friend std::ostream& operator<<(std::ostream& os, const DictProxy& d) {
    auto it = d.items();
    os << '{';
    bool first = true;
    for (const auto& [k, v] : it) {
      if (!first) os << ", ";
      first = false;
      detail::mgr::repr(os, k);
      os << ": ";
      detail::mgr::repr(os, v);
    }
    return os << '}';
  }

 private:
  template <class X>
  static std::vector<X> decode_all(const std::vector<std::string>& b) {
    std::vector<X> out;
    out.reserve(b.size());
    for (const auto& s : b) out.push_back(detail::mgr::decode<X>(s));
    return out;
  }
};

/// One value held by a manager (Python: manager.Value(typecode, v)). set() is pipelined.
template <class T>
class ValueProxy : public BaseProxy {
  using Op = detail::mgr::Op;

 public:
  ValueProxy() = default;
  explicit ValueProxy(detail::mgr::Ref r) : BaseProxy(std::move(r)) {}
  T value() const {
    auto r = detail::mgr::call(ref(), Op::value_get);
    if (r.blobs.size() != 1) throw ManagerError("multiprocessing: malformed manager reply");
    return detail::mgr::decode<T>(r.blobs[0]);
  }
  T get() const { return value(); }
  void set(const T& v) { detail::mgr::post(ref(), Op::value_set, 0, {detail::mgr::encode(v)}); }
  friend std::ostream& operator<<(std::ostream& os, const ValueProxy& p) {
    detail::mgr::repr(os, p.value());
    return os;
  }
};

/// Attributes by name, each of any serializable type (Python: manager.Namespace()).
/// get<T>(name) reads an attribute as T (mp::TypeError if it was set as another type,
/// std::out_of_range when absent).
class NamespaceProxy : public BaseProxy {
  using Op = detail::mgr::Op;

 public:
  NamespaceProxy() = default;
  explicit NamespaceProxy(detail::mgr::Ref r) : BaseProxy(std::move(r)) {}
  template <class T>
  void set(const std::string& name, const T& v) {
    detail::mgr::post(ref(), Op::dict_set, 0, {name, detail::mgr::encode(v)});
  }
  template <class T>
  T get(const std::string& name) const {
    auto r = detail::mgr::call(ref(), Op::dict_get, 0, {name});
    if (r.n == 0 || r.blobs.empty())
      throw std::out_of_range("multiprocessing: the Namespace has no attribute '" + name + "'");
    return detail::mgr::decode<T>(r.blobs[0]);
  }
  bool contains(const std::string& name) const {
    return detail::mgr::call(ref(), Op::dict_contains, 0, {name}).n != 0;
  }
  bool erase(const std::string& name) { return detail::mgr::call(ref(), Op::dict_erase, 0, {name}).n != 0; }
  /// The attribute names, in the order they were first set.
  std::vector<std::string> names() const { return detail::mgr::call(ref(), Op::dict_keys).blobs; }
};

/// A manager (Python: multiprocessing.Manager() / SyncManager / BaseManager). See the file
/// comment. Move-only; the object that started the server shuts it down on destruction.
class Manager {
 public:
  /// Starts the server process and waits (up to options.timeout) until it listens. Throws
  /// std::system_error when the address cannot be bound (EADDRINUSE, ...), mp::ManagerError
  /// when the server dies during start-up, mp::ProcessError from a daemon process.
  Manager() : Manager(ManagerOptions{}) {}
  explicit Manager(ManagerOptions options);
  /// Connects to the server of another program (Python: BaseManager(address, authkey).connect()).
  /// The result makes and finds named objects; it does not own the server. Throws
  /// mp::AuthenticationError for a wrong key, std::system_error when nothing listens,
  /// mp::TimeoutError when the server does not answer in time.
  static Manager connect(const std::string& address, const std::string& authkey,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(30'000));

  Manager(Manager&&) noexcept;
  Manager& operator=(Manager&&) noexcept;
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;
  /// shutdown(); never throws.
  ~Manager();

  /// A new empty list (or, with a name, the list registered under it, made on first use:
  /// Python's register(name) pattern). mp::TypeError when the name holds another kind or type.
  template <class T>
  ListProxy<T> list(const std::string& name = "") {
    return ListProxy<T>(make(detail::mgr::Kind::list, name, {reduction::type_tag<T>()}, {}));
  }
  /// A list holding `values` at first.
  template <class T>
  ListProxy<T> list(std::initializer_list<T> values) {
    auto l = list<T>();
    l.extend(values);
    return l;
  }
  template <class K, class V>
  DictProxy<K, V> dict(const std::string& name = "") {
    return DictProxy<K, V>(make(detail::mgr::Kind::dict, name, {reduction::type_tag<K>(), reduction::type_tag<V>()}, {}));
  }
  /// A value holding `v` (a named one keeps its current value when it already exists).
  template <class T>
  ValueProxy<T> Value(const T& v = T{}, const std::string& name = "") {
    return ValueProxy<T>(make(detail::mgr::Kind::value, name, {reduction::type_tag<T>()}, detail::mgr::encode(v)));
  }
  NamespaceProxy Namespace(const std::string& name = "") {
    return NamespaceProxy(make(detail::mgr::Kind::ns, name, {}, {}));
  }

  /// Shared-memory primitives made by this process (see the file comment).
  template <class T>
  ::multiprocessing::Queue<T> Queue(std::int64_t maxsize = 0) {
    require_local("Queue");
    return ::multiprocessing::Queue<T>(maxsize);
  }
  template <class T>
  ::multiprocessing::JoinableQueue<T> JoinableQueue(std::int64_t maxsize = 0) {
    require_local("JoinableQueue");
    return ::multiprocessing::JoinableQueue<T>(maxsize);
  }
  ::multiprocessing::Lock Lock();
  ::multiprocessing::RLock RLock();
  ::multiprocessing::Event Event();
  ::multiprocessing::Semaphore Semaphore(int value = 1);
  ::multiprocessing::BoundedSemaphore BoundedSemaphore(int value = 1);
  ::multiprocessing::Barrier Barrier(std::size_t parties);

  /// The address the server listens on (the real port when port 0 was asked).
  const std::string& address() const noexcept { return ref_.address; }
  const std::string& authkey() const noexcept { return ref_.authkey; }
  /// The server's pid (0 for a connected client).
  pid_t pid() const noexcept { return pid_; }
  /// True when this object started the server.
  bool owns_server() const noexcept { return proc_ != nullptr; }
  /// True until shutdown().
  bool running() const noexcept { return !ref_.address.empty(); }
  /// Blocks until the server process ends (Python: serve_forever() of a served manager).
  void join();
  /// Stops the server (if this object started it) and waits for it, at most a few seconds
  /// before killing it; a connected client just disconnects. Later proxy calls throw
  /// mp::ManagerError. Idempotent.
  void shutdown();

 private:
  struct ClientTag {};
  explicit Manager(ClientTag) noexcept {}
  detail::mgr::Ref make(detail::mgr::Kind kind, const std::string& name, std::vector<std::uint64_t> tags,
                        std::string initial);
  void require_local(const char* what) const;

  detail::mgr::Ref ref_;
  pid_t pid_ = 0;
  std::unique_ptr<Process> proc_;
};

}  // namespace multiprocessing
