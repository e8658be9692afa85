// reduction.hpp: what may cross a process boundary, and the codec that carries it
// (Python: multiprocessing/reduction.py, pickle).
//
// Every queue item, pipe message, task argument and result crosses as one message made by
// dumps()/dump_into() and read back by loads(). A message is self-describing: it starts with a
// version byte and a 64-bit tag of the written type (FNV-1a of its readable name, computed at
// compile time), so reading it as another type is a clear mp::TypeError, never garbage.
//
// What crosses with no boilerplate (nested freely):
//   - arithmetic types; enums with a fixed underlying type (`enum class E`, `enum E : int`);
//   - std::string (and the other std::basic_string<CharT>), std::vector, std::deque,
//     std::list, std::array, std::map, std::multimap, std::unordered_map,
//     std::unordered_multimap, std::set, std::multiset, std::unordered_set,
//     std::unordered_multiset, std::pair, std::tuple, std::optional, std::variant,
//     std::monostate, std::chrono::duration;
//   - aggregates (plain structs) of these, reflected with Boost.PFR. Not supported: aggregates
//     with base classes, C-array members (use std::array), reference or const members, and
//     aggregates that contain themselves (a tree: give it a serialize() instead);
//   - any class with a cereal-style `template <class Archive> void serialize(Archive& ar)`
//     member (it may be private with `friend class cereal::access`), a save/load member pair,
//     or the non-member forms found by ADL. Inside it: `ar(a, b, c)`, `ar & x`,
//     `ar << x` / `ar >> x`, cereal::make_nvp / CEREAL_NVP, cereal::base_class /
//     cereal::virtual_base_class, cereal::make_size_tag, cereal::binary_data. Each member is
//     encoded by this codec (not by cereal), so every length stays bounds-checked. The class
//     is encoded as a length-prefixed body, and a load that reads less than the save wrote is
//     an mp::DecodeError. make_nvp/CEREAL_NVP come from <cereal/cereal.hpp>; base_class of a
//     polymorphic base needs <cereal/types/polymorphic.hpp>, as in cereal. Not supported:
//     versioned serialize(Archive&, std::uint32_t), load_and_construct, pointers. A class
//     with both a serialize() and aggregate shape uses its serialize();
//   - a type with `void mp_reduce(mp::detail::Writer&) const` and
//     `static T mp_rebuild(mp::detail::Reader&)`: the extension point for handles (queues,
//     locks, connections) that carry file descriptors out of band. See detail::Writer::add_fd
//     and detail::Reader::take_fd, and the fds overloads of dump_into/loads below.
// Pointers, references, string_view/span, smart pointers, unions, enums without a fixed
// underlying type and classes with none of the above are refused at compile time with a
// static_assert that says why.
//
// Dense data (arithmetic types except bool, enums, std::array of them and trivially copyable
// aggregates of them with no padding) is copied with one memcpy, e.g. a std::vector<double>
// or a std::vector<Point{int x, y;}>. bool, optional flags and variant indices are validated.
//
// Safety: a truncated, corrupt or trailing-garbage message throws mp::DecodeError; nothing
// crashes, hangs or allocates more than the bytes received justify (every count is checked
// against the bytes left before anything is reserved, and every value costs at least one
// byte, so a container never holds more elements than the message has bytes). cereal /
// mp_reduce values may nest at most 256 levels deep (encoding deeper throws mp::ValueError),
// which bounds the decoder's recursion. The wire format is described in detail/codec.hpp. The wire format uses the host byte
// order and layout: both ends must run the same build (as fork, spawn and forkserver
// children do) or at least the same ABI.
#pragma once

#include <bit>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "multiprocessing/detail/codec.hpp"
#include "multiprocessing/errors.hpp"

namespace multiprocessing {
namespace detail::codec {

template <class T>
inline constexpr std::array<char, kHeaderSize> header_v = [] {
  std::array<char, kHeaderSize> h{};
  h[0] = static_cast<char>(kVersion);
  for (std::size_t i = 0; i < 8; ++i) h[1 + i] = static_cast<char>((tag_v<T> >> (8 * i)) & 0xff);
  return h;
}();

inline std::uint64_t load_tag(const char* p) noexcept {
  std::uint64_t t = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&t, p, 8);
  } else {
    for (std::size_t i = 0; i < 8; ++i) t |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return t;
}

/// "std::vector<int>", or "an unknown type (tag 0x...)" when this process never saw it.
inline std::string describe_tag(std::uint64_t tag) {
  std::string_view n = lookup_type(tag);
  if (!n.empty()) return std::string(n);
  char buf[64];
  std::snprintf(buf, sizeof buf, "an unknown type (tag 0x%016llx)", static_cast<unsigned long long>(tag));
  return buf;
}

[[noreturn, gnu::cold, gnu::noinline]] inline void throw_type_mismatch(std::uint64_t written, std::string_view wanted) {
  throw TypeError("multiprocessing: a message holding " + describe_tag(written) + " was read as " +
                  std::string(wanted));
}

template <class T>
void check_type() {
  static_assert(!std::is_reference_v<T>, "multiprocessing: loads<T&> makes no sense; a message decodes to a value");
  static_assert(!std::is_array_v<T>, "multiprocessing: a C array cannot be returned; use std::array");
  (void)Registration<T>::done;  // names T in TypeErrors raised anywhere in this process
}

template <class T>
void dump_message(std::string& out, const T& value, std::vector<int>* fds) {
  check_type<T>();
  const std::size_t start = out.size();
  Writer w(out, fds);
  try {
    w.reserve_exact(kHeaderSize + size_hint(value));
    std::memcpy(w.grab(kHeaderSize), header_v<T>.data(), kHeaderSize);
    encode(w, value);
  } catch (...) {
    w.rollback(start);
    throw;
  }
}

inline void read_header(Reader& r, std::uint64_t want, std::string_view wanted_name) {
  if (r.remaining() < kHeaderSize) r.fail("message too short for its header");
  const char* p = r.take(kHeaderSize);
  if (static_cast<unsigned char>(p[0]) != kVersion) r.fail("not a multiprocessing message (bad version byte)");
  const std::uint64_t tag = load_tag(p + 1);
  if (tag != want) [[unlikely]] throw_type_mismatch(tag, wanted_name);
}

template <class T>
T load_message(std::string_view message, std::span<int> fds, std::string_view* rest) {
  check_type<T>();
  Reader r(message, fds, name_v<T>.view());
  read_header(r, tag_v<T>, name_v<T>.view());
  T value = decode_value<T>(r);
  if (rest != nullptr) {
    *rest = std::string_view(r.position(), r.remaining());
  } else if (r.remaining() != 0) {
    r.fail(std::to_string(r.remaining()) + " trailing bytes after the value");
  }
  return value;
}

}  // namespace detail::codec

namespace reduction {

/// True for the types that may cross a process boundary (see the file comment). Classes with a
/// cereal-style serialize() are accepted as a whole; their members are checked when used.
template <class T>
concept Serializable = detail::codec::serializable<std::remove_cv_t<T>>();

/// Appends one self-describing message holding `value` to `out`, without temporaries: the
/// encoded size is computed first and `out` grows once. On an exception `out` is left as it
/// was. Does not block; thread-safe for distinct `out`s.
/// Throws mp::ValueError for a valueless variant, mp::TypeError for a descriptor-carrying
/// value (see the fds overload), and whatever a user serialize()/mp_reduce throws.
/// A type that cannot cross fails to compile with a static_assert saying why.
template <class T>
void dump_into(std::string& out, const T& value) {
  detail::codec::dump_message<std::remove_cv_t<T>>(out, value, nullptr);
}

/// As above, for transports that pass descriptors out of band (SCM_RIGHTS): the descriptors
/// of mp_reduce values are appended to `fds` (borrowed: they must stay open until sent).
template <class T>
void dump_into(std::string& out, const T& value, std::vector<int>& fds) {
  const std::size_t fd_start = fds.size();
  try {
    detail::codec::dump_message<std::remove_cv_t<T>>(out, value, &fds);
  } catch (...) {
    fds.resize(fd_start);
    throw;
  }
}

/// One self-describing message holding `value` (Python: pickle.dumps). An int takes a few ns
/// and no allocation (the message fits std::string's small buffer). Same errors as dump_into.
template <class T>
std::string dumps(const T& value) {
  std::string out;
  detail::codec::dump_message<std::remove_cv_t<T>>(out, value, nullptr);
  return out;
}

/// Decodes one message written as T (Python: pickle.loads). Decoding copies each string and
/// element once, straight from `message`; dense vectors are one memcpy.
/// Throws mp::TypeError naming both types when the message holds another type, and
/// mp::DecodeError when it is truncated, corrupt or followed by trailing bytes. Never
/// crashes, hangs or allocates beyond what `message.size()` justifies. Thread-safe.
template <class T>
T loads(std::string_view message) {
  return detail::codec::load_message<std::remove_cv_t<T>>(message, {}, nullptr);
}

/// As above, for a message received with out-of-band descriptors `fds`. mp_rebuild takes the
/// ones it uses (Reader::take_fd sets their slot to -1); the caller must close the others.
template <class T>
T loads(std::string_view message, std::span<int> fds) {
  return detail::codec::load_message<std::remove_cv_t<T>>(message, fds, nullptr);
}

/// Decodes the message at the front of `in` (several dump_into() calls concatenated) and
/// advances `in` past it. Same errors as loads, except that bytes after the value are left
/// for the next call.
template <class T>
T load_prefix(std::string_view& in) {
  std::string_view rest;
  T value = detail::codec::load_message<std::remove_cv_t<T>>(in, {}, &rest);
  in = rest;
  return value;
}

/// A readable name of T, e.g. "std::vector<int>", "std::map<std::string, double>", "ns::Point".
/// The spelling of user types is the compiler's.
template <class T>
std::string type_name() {
  return std::string(detail::codec::name_v<std::remove_cv_t<T>>.view());
}

/// The 64-bit tag a message of T carries (FNV-1a of type_name<T>()), a compile-time constant.
template <class T>
constexpr std::uint64_t type_tag() noexcept {
  return detail::codec::tag_v<std::remove_cv_t<T>>;
}

/// The name of the type a message was written as ("an unknown type (tag 0x...)" when no code
/// in this process encodes or decodes it). Throws mp::DecodeError if `message` has no header.
inline std::string message_type(std::string_view message) {
  if (message.size() < detail::codec::kHeaderSize ||
      static_cast<unsigned char>(message[0]) != detail::codec::kVersion) {
    throw DecodeError("multiprocessing: not a multiprocessing message (bad or missing header)");
  }
  return detail::codec::describe_tag(detail::codec::load_tag(message.data() + 1));
}

}  // namespace reduction
}  // namespace multiprocessing
