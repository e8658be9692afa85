// codec.hpp: the binary codec behind reduction.hpp: compile-time type names and tags, the
// byte Writer/Reader, and the encoder/decoder of every supported type (Python: pickle).
// Users never include this directly; see multiprocessing/reduction.hpp for the contract.
//
// Wire format of one message:  [version byte][8-byte type tag][payload]
//   payload, by type (native byte order; both ends run the same binary or ABI):
//   bool, enum E : bool       1 byte, 0 or 1 (validated)
//   arithmetic, enum          sizeof(T) bytes (long double: its 10 significant bytes on x86)
//   std::string               varint length, bytes
//   vector/deque/list/set...  varint count, elements (dense elements: one memcpy block)
//   map/unordered_map         varint count, key value key value ...
//   std::array, pair, tuple   elements in order, no count
//   optional                  1 byte 0/1, value when 1
//   variant                   varint index (validated), the alternative
//   aggregate                 its fields in order (dense aggregates: sizeof(T) raw bytes)
//   cereal class, mp_reduce   varint body length, body (the body must be consumed exactly)
//   a value that would encode to nothing (monostate, tuple<>, array<T,0>, empty struct)
//                             one 0 byte, so every value costs at least one byte and an
//                             element count can always be checked against the bytes left.
// "Dense" types have no padding and accept every bit pattern: arithmetic except bool and
// long double, enums with a fixed underlying type, std::array of dense types, and trivially
// copyable aggregates of dense fields with no padding. They are copied with memcpy.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <boost/pfr/core.hpp>
#include <boost/pfr/tuple_size.hpp>
#include <cereal/access.hpp>
#include <cereal/details/helpers.hpp>
#include <cereal/types/base_class.hpp>

#include "multiprocessing/errors.hpp"

namespace multiprocessing::detail {

class Writer;
class Reader;

namespace codec {

// ---------------------------------------------------------------------------------------------
// Compile-time strings, type names and tags.

template <std::size_t N>
struct FixedString {
  char chars[N + 1] = {};
  constexpr FixedString() = default;
  constexpr FixedString(const char (&s)[N + 1]) {  // NOLINT(google-explicit-constructor)
    for (std::size_t i = 0; i < N; ++i) chars[i] = s[i];
  }
  constexpr std::string_view view() const { return {chars, N}; }
};
template <std::size_t N>
FixedString(const char (&)[N]) -> FixedString<N - 1>;

template <std::size_t A, std::size_t B>
constexpr FixedString<A + B> operator+(const FixedString<A>& a, const FixedString<B>& b) {
  FixedString<A + B> r;
  for (std::size_t i = 0; i < A; ++i) r.chars[i] = a.chars[i];
  for (std::size_t i = 0; i < B; ++i) r.chars[A + i] = b.chars[i];
  return r;
}

template <std::intmax_t V>
constexpr auto number_string() {
  constexpr std::size_t digits = [] {
    std::size_t d = V < 0 ? 2 : 1;
    for (std::uintmax_t x = V < 0 ? 0 - static_cast<std::uintmax_t>(V) : V; x >= 10; x /= 10) ++d;
    return d;
  }();
  FixedString<digits> r;
  std::uintmax_t x = V < 0 ? 0 - static_cast<std::uintmax_t>(V) : V;
  for (std::size_t i = digits; i-- > 0;) {
    r.chars[i] = static_cast<char>('0' + x % 10);
    x /= 10;
  }
  if (V < 0) r.chars[0] = '-';
  return r;
}

// The compiler's spelling of T, cut out of __PRETTY_FUNCTION__:
//   g++:   "... raw_pretty() [with T = ns::Point; std::string_view = ...]"
//   clang: "... raw_pretty() [T = ns::Point]"
template <class T>
constexpr std::string_view raw_pretty() {
  return __PRETTY_FUNCTION__;
}
template <class T>
constexpr std::string_view pretty_name() {
  constexpr std::string_view p = raw_pretty<T>();
  constexpr std::size_t start = p.find("T = ") + 4;
  constexpr std::size_t semi = p.find("; ", start);
  constexpr std::size_t end = semi != std::string_view::npos ? semi : p.rfind(']');
  return p.substr(start, end - start);
}
template <class T>
constexpr auto pretty_fixed() {
  constexpr std::string_view s = pretty_name<T>();
  FixedString<s.size()> r;
  for (std::size_t i = 0; i < s.size(); ++i) r.chars[i] = s[i];
  return r;
}

template <class T>
constexpr auto make_name();
/// The readable name of T as a compile-time string, e.g. "std::vector<int>".
template <class T>
inline constexpr auto name_v = make_name<T>();

template <class... Ts>
constexpr auto join_names() {
  if constexpr (sizeof...(Ts) == 0) {
    return FixedString("");
  } else {
    return [] <class First, class... Rest>(std::type_identity<First>, std::type_identity<Rest>...) {
      return (name_v<First> + ... + (FixedString(", ") + name_v<Rest>));
    }(std::type_identity<Ts>{}...);
  }
}

/// 64-bit FNV-1a.
constexpr std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

template <class T>
inline constexpr std::uint64_t tag_v = fnv1a(name_v<T>.view());

/// How deeply cereal / mp_reduce values may nest inside each other (the only way a type can
/// contain itself). Bounds the decoder's recursion, so a hostile message cannot exhaust the stack.
inline constexpr unsigned kMaxDepth = 256;

inline constexpr unsigned char kVersion = 0xC1;          // codec version 1
inline constexpr std::size_t kHeaderSize = 1 + 8;        // version byte + type tag

// Process-wide registry tag -> name, so that a TypeError can name the type a message was
// written as. Each type that this binary can encode or decode links one static record into a
// lock-free list during static initialisation: no allocation, no lock (safe after fork).
struct TypeRecord {
  std::uint64_t tag;
  std::string_view name;
  const TypeRecord* next;
};
inline std::atomic<const TypeRecord*> registry_head{nullptr};

inline bool register_type(TypeRecord* rec) noexcept {
  const TypeRecord* head = registry_head.load(std::memory_order_relaxed);
  do {
    rec->next = head;
  } while (!registry_head.compare_exchange_weak(head, rec, std::memory_order_release,
                                                std::memory_order_relaxed));
  return true;
}

/// The name registered for `tag`, empty when no type with that tag was seen in this process.
inline std::string_view lookup_type(std::uint64_t tag) noexcept {
  for (const TypeRecord* r = registry_head.load(std::memory_order_acquire); r; r = r->next) {
    if (r->tag == tag) return r->name;
  }
  return {};
}

template <class T>
struct Registration {
  static inline TypeRecord record{tag_v<T>, name_v<T>.view(), nullptr};
  static inline const bool done = register_type(&record);
};

// ---------------------------------------------------------------------------------------------
// Type classification.

enum class Kind {
  unsupported,
  boolean,
  scalar,       // arithmetic except bool
  enumeration,  // enum with a fixed underlying type
  string,
  sequence,     // vector (not of bool), deque, list
  vector_bool,
  array,        // std::array
  map,
  set,
  pair,
  tuple,
  optional,
  variant,
  monostate,
  duration,
  reduce,     // mp_reduce / mp_rebuild members
  cereal,     // cereal-style serialize / save+load
  aggregate,  // Boost.PFR
};

template <class T>
struct Shape {
  static constexpr Kind kind = Kind::unsupported;
};

template <class C, class Tr, class A>
struct Shape<std::basic_string<C, Tr, A>> {
  static constexpr Kind kind = std::is_same_v<Tr, std::char_traits<C>> ? Kind::string : Kind::unsupported;
  using value_type = C;
  static constexpr auto name() {
    if constexpr (std::is_same_v<C, char>) return FixedString("std::string");
    else if constexpr (std::is_same_v<C, wchar_t>) return FixedString("std::wstring");
    else if constexpr (std::is_same_v<C, char8_t>) return FixedString("std::u8string");
    else if constexpr (std::is_same_v<C, char16_t>) return FixedString("std::u16string");
    else if constexpr (std::is_same_v<C, char32_t>) return FixedString("std::u32string");
    else return FixedString("std::basic_string<") + name_v<C> + FixedString(">");
  }
};

#define MP_CODEC_SEQUENCE(TEMPLATE, KIND)                                                   \
  template <class T, class A>                                                               \
  struct Shape<std::TEMPLATE<T, A>> {                                                       \
    static constexpr Kind kind = KIND;                                                      \
    using value_type = T;                                                                   \
    static constexpr auto name() { return FixedString("std::" #TEMPLATE "<") + name_v<T> + FixedString(">"); } \
  };
MP_CODEC_SEQUENCE(vector, (std::is_same_v<T, bool> ? Kind::vector_bool : Kind::sequence))
MP_CODEC_SEQUENCE(deque, Kind::sequence)
MP_CODEC_SEQUENCE(list, Kind::sequence)
#undef MP_CODEC_SEQUENCE

#define MP_CODEC_MAP(TEMPLATE, MULTI, ...)                                                  \
  template <class K, class V, class... Rest>                                                \
  struct Shape<std::TEMPLATE<K, V, Rest...>> {                                              \
    static constexpr Kind kind = Kind::map;                                                 \
    static constexpr bool multi = MULTI;                                                    \
    using key_type = K;                                                                     \
    using mapped_type = V;                                                                  \
    static constexpr auto name() {                                                          \
      return FixedString("std::" #TEMPLATE "<") + name_v<K> + FixedString(", ") + name_v<V> + FixedString(">"); \
    }                                                                                       \
  };
MP_CODEC_MAP(map, false)
MP_CODEC_MAP(multimap, true)
MP_CODEC_MAP(unordered_map, false)
MP_CODEC_MAP(unordered_multimap, true)
#undef MP_CODEC_MAP

#define MP_CODEC_SET(TEMPLATE, MULTI)                                                       \
  template <class K, class... Rest>                                                         \
  struct Shape<std::TEMPLATE<K, Rest...>> {                                                 \
    static constexpr Kind kind = Kind::set;                                                 \
    static constexpr bool multi = MULTI;                                                    \
    using key_type = K;                                                                     \
    static constexpr auto name() { return FixedString("std::" #TEMPLATE "<") + name_v<K> + FixedString(">"); } \
  };
MP_CODEC_SET(set, false)
MP_CODEC_SET(multiset, true)
MP_CODEC_SET(unordered_set, false)
MP_CODEC_SET(unordered_multiset, true)
#undef MP_CODEC_SET

template <class T, std::size_t N>
struct Shape<std::array<T, N>> {
  static constexpr Kind kind = Kind::array;
  using value_type = T;
  static constexpr std::size_t size = N;
  static constexpr auto name() {
    return FixedString("std::array<") + name_v<T> + FixedString(", ") + number_string<N>() + FixedString(">");
  }
};
template <class A, class B>
struct Shape<std::pair<A, B>> {
  static constexpr Kind kind = Kind::pair;
  static constexpr auto name() { return FixedString("std::pair<") + join_names<A, B>() + FixedString(">"); }
};
template <class... Ts>
struct Shape<std::tuple<Ts...>> {
  static constexpr Kind kind = Kind::tuple;
  static constexpr auto name() { return FixedString("std::tuple<") + join_names<Ts...>() + FixedString(">"); }
};
template <class T>
struct Shape<std::optional<T>> {
  static constexpr Kind kind = Kind::optional;
  using value_type = T;
  static constexpr auto name() { return FixedString("std::optional<") + name_v<T> + FixedString(">"); }
};
template <class... Ts>
struct Shape<std::variant<Ts...>> {
  static constexpr Kind kind = Kind::variant;
  static constexpr auto name() { return FixedString("std::variant<") + join_names<Ts...>() + FixedString(">"); }
};
template <>
struct Shape<std::monostate> {
  static constexpr Kind kind = Kind::monostate;
  static constexpr auto name() { return FixedString("std::monostate"); }
};
template <class Rep, class Period>
struct Shape<std::chrono::duration<Rep, Period>> {
  static constexpr Kind kind = Kind::duration;
  using rep = Rep;
  static constexpr auto name() {
    return FixedString("std::chrono::duration<") + name_v<Rep> + FixedString(", std::ratio<") +
           number_string<Period::num>() + FixedString(", ") + number_string<Period::den>() + FixedString(">>");
  }
};

// Things that must not cross, recognised so that the refusal can say why.
template <class T> struct is_non_owning_view : std::false_type {};
template <class C, class Tr> struct is_non_owning_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t E> struct is_non_owning_view<std::span<T, E>> : std::true_type {};
template <class T> struct is_smart_pointer : std::false_type {};
template <class T, class D> struct is_smart_pointer<std::unique_ptr<T, D>> : std::true_type {};
template <class T> struct is_smart_pointer<std::shared_ptr<T>> : std::true_type {};
template <class T> struct is_smart_pointer<std::weak_ptr<T>> : std::true_type {};

// Our cereal-compatible archives (defined below); detection only needs their names.
class CerealWriter;
class CerealReader;

template <class E>
concept FixedEnum = std::is_enum_v<E> && requires { E{std::underlying_type_t<E>{}}; };

template <class T>
concept HasReduce = requires(const T& t, Writer& w, Reader& r) {
  t.mp_reduce(w);
  { T::mp_rebuild(r) } -> std::same_as<T>;
};

template <class T>
concept CerealMemberSerialize = requires(CerealWriter& w, CerealReader& r, T& t) {
  cereal::access::member_serialize(w, t);
  cereal::access::member_serialize(r, t);
};
template <class T>
concept CerealMemberSaveLoad = requires(CerealWriter& w, CerealReader& r, T& t, const T& ct) {
  cereal::access::member_save(w, ct);
  cereal::access::member_load(r, t);
};
template <class T>
concept CerealFreeSerialize = requires(CerealWriter& w, CerealReader& r, T& t) {
  serialize(w, t);  // found by argument-dependent lookup in T's namespace
  serialize(r, t);
};
template <class T>
concept CerealFreeSaveLoad = requires(CerealWriter& w, CerealReader& r, T& t, const T& ct) {
  save(w, ct);
  load(r, t);
};
template <class T>
concept CerealClass = CerealMemberSerialize<T> || CerealMemberSaveLoad<T> ||
                      CerealFreeSerialize<T> || CerealFreeSaveLoad<T>;

template <class T>
concept PfrAggregate = std::is_class_v<T> && std::is_aggregate_v<T> && !std::is_union_v<T>;

template <class T>
constexpr Kind kind_of() {
  if constexpr (std::is_reference_v<T> || std::is_const_v<T> || std::is_volatile_v<T>) {
    return Kind::unsupported;
  } else if constexpr (std::is_same_v<T, bool>) {
    return Kind::boolean;
  } else if constexpr (std::is_arithmetic_v<T>) {
    return Kind::scalar;
  } else if constexpr (std::is_enum_v<T>) {
    return FixedEnum<T> ? Kind::enumeration : Kind::unsupported;
  } else if constexpr (!std::is_class_v<T> || std::is_union_v<T>) {
    return Kind::unsupported;
  } else if constexpr (HasReduce<T>) {
    return Kind::reduce;
  } else if constexpr (Shape<T>::kind != Kind::unsupported) {
    return Shape<T>::kind;
  } else if constexpr (is_non_owning_view<T>::value || is_smart_pointer<T>::value) {
    return Kind::unsupported;
  } else if constexpr (CerealClass<T>) {
    return Kind::cereal;
  } else if constexpr (PfrAggregate<T>) {
    return Kind::aggregate;
  } else {
    return Kind::unsupported;
  }
}
template <class T>
inline constexpr Kind kind_v = kind_of<T>();

template <class T>
constexpr auto make_name() {
  constexpr Kind k = kind_v<T>;
  if constexpr (std::is_same_v<T, bool>) return FixedString("bool");
  else if constexpr (std::is_same_v<T, char>) return FixedString("char");
  else if constexpr (std::is_same_v<T, signed char>) return FixedString("signed char");
  else if constexpr (std::is_same_v<T, unsigned char>) return FixedString("unsigned char");
  else if constexpr (std::is_same_v<T, wchar_t>) return FixedString("wchar_t");
  else if constexpr (std::is_same_v<T, char8_t>) return FixedString("char8_t");
  else if constexpr (std::is_same_v<T, char16_t>) return FixedString("char16_t");
  else if constexpr (std::is_same_v<T, char32_t>) return FixedString("char32_t");
  else if constexpr (std::is_same_v<T, short>) return FixedString("short");
  else if constexpr (std::is_same_v<T, unsigned short>) return FixedString("unsigned short");
  else if constexpr (std::is_same_v<T, int>) return FixedString("int");
  else if constexpr (std::is_same_v<T, unsigned>) return FixedString("unsigned int");
  else if constexpr (std::is_same_v<T, long>) return FixedString("long");
  else if constexpr (std::is_same_v<T, unsigned long>) return FixedString("unsigned long");
  else if constexpr (std::is_same_v<T, long long>) return FixedString("long long");
  else if constexpr (std::is_same_v<T, unsigned long long>) return FixedString("unsigned long long");
  else if constexpr (std::is_same_v<T, float>) return FixedString("float");
  else if constexpr (std::is_same_v<T, double>) return FixedString("double");
  else if constexpr (std::is_same_v<T, long double>) return FixedString("long double");
  else if constexpr (k != Kind::unsupported && k != Kind::reduce && k != Kind::cereal &&
                     k != Kind::aggregate && k != Kind::enumeration && k != Kind::scalar)
    return Shape<T>::name();
  else return pretty_fixed<T>();
}

// ---------------------------------------------------------------------------------------------
// What may cross, and why not.

template <class T>
constexpr bool serializable();

template <class T, std::size_t... I>
constexpr bool aggregate_fields_ok(std::index_sequence<I...>) {
  return ((!std::is_reference_v<boost::pfr::tuple_element_t<I, T>> &&
           !std::is_const_v<boost::pfr::tuple_element_t<I, T>> &&
           serializable<boost::pfr::tuple_element_t<I, T>>()) && ...);
}

template <class T>
constexpr bool serializable() {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::unsupported) return false;
  else if constexpr (k == Kind::string) return true;
  else if constexpr (k == Kind::sequence || k == Kind::array || k == Kind::optional)
    return serializable<typename Shape<T>::value_type>();
  else if constexpr (k == Kind::map)
    return serializable<typename Shape<T>::key_type>() && serializable<typename Shape<T>::mapped_type>();
  else if constexpr (k == Kind::set) return serializable<typename Shape<T>::key_type>();
  else if constexpr (k == Kind::pair) return serializable<typename T::first_type>() && serializable<typename T::second_type>();
  else if constexpr (k == Kind::tuple || k == Kind::variant)
    return []<template <class...> class Tmpl, class... Ts>(std::type_identity<Tmpl<Ts...>>) {
      return (serializable<Ts>() && ...);
    }(std::type_identity<T>{});
  else if constexpr (k == Kind::duration) return std::is_arithmetic_v<typename T::rep>;
  else if constexpr (k == Kind::aggregate)
    return std::is_default_constructible_v<T> &&
           aggregate_fields_ok<T>(std::make_index_sequence<boost::pfr::tuple_size_v<T>>{});
  else return true;  // scalars, enums, cereal classes (their members are checked when used), mp_reduce
}

template <class T>
inline constexpr bool always_false = false;

template <class T>
constexpr bool bad_duration() {
  if constexpr (kind_v<T> == Kind::duration) return !std::is_arithmetic_v<typename T::rep>;
  else return false;
}

// Instantiated only for a type that cannot cross (containers and aggregates recurse into
// their elements, so this fires at the innermost offending type and says why).
template <class T>
constexpr void refuse() {
  if constexpr (std::is_reference_v<T>) {
    static_assert(always_false<T>, "multiprocessing: a reference cannot cross a process boundary; send the value itself");
  } else if constexpr (std::is_pointer_v<T>) {
    static_assert(always_false<T>,
                  "multiprocessing: a raw pointer cannot cross a process boundary (the address means "
                  "nothing in another process); send the value it points to, or a std::optional");
  } else if constexpr (std::is_member_pointer_v<T> || std::is_function_v<T>) {
    static_assert(always_false<T>, "multiprocessing: a function or member pointer cannot cross a process boundary");
  } else if constexpr (std::is_array_v<T>) {
    static_assert(always_false<T>,
                  "multiprocessing: a C array cannot cross; use std::array (aggregates with C-array "
                  "members are not supported either)");
  } else if constexpr (std::is_const_v<T> || std::is_volatile_v<T>) {
    static_assert(always_false<T>,
                  "multiprocessing: a const or volatile member cannot be decoded in place; drop the qualifier");
  } else if constexpr (std::is_enum_v<T>) {
    static_assert(always_false<T>,
                  "multiprocessing: an enum without a fixed underlying type cannot cross (a received "
                  "value outside its enumerators' range would be undefined behaviour and cannot be "
                  "checked); declare it `enum E : int {...}` or `enum class E {...}`");
  } else if constexpr (std::is_union_v<T>) {
    static_assert(always_false<T>, "multiprocessing: a union cannot cross (its active member is unknown); use std::variant");
  } else if constexpr (is_non_owning_view<T>::value) {
    static_assert(always_false<T>,
                  "multiprocessing: std::string_view / std::span do not own their data and cannot "
                  "cross; send a std::string / std::vector");
  } else if constexpr (is_smart_pointer<T>::value) {
    static_assert(always_false<T>,
                  "multiprocessing: a smart pointer cannot cross a process boundary; send the value "
                  "it owns (use std::optional for 'maybe none')");
  } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
    static_assert(always_false<T>, "multiprocessing: std::nullptr_t cannot cross; use std::monostate or std::optional");
  } else if constexpr (kind_v<T> == Kind::duration) {
    static_assert(always_false<T>, "multiprocessing: a std::chrono::duration crosses only with an arithmetic rep");
  } else {
    static_assert(always_false<T>,
                  "multiprocessing: this type cannot cross a process boundary: make it an "
                  "aggregate of serializable members (no boilerplate), give it a cereal-style "
                  "`template <class Archive> void serialize(Archive& ar) { ar(a, b); }` member, or "
                  "give it `void mp_reduce(detail::Writer&) const` + `static T mp_rebuild(detail::Reader&)`");
  }
}

// ---------------------------------------------------------------------------------------------
// Sizes.

// Dense: every bit pattern valid, no padding: encoded by memcpy of sizeof(T) bytes.
template <class T>
constexpr bool dense();

template <class T, std::size_t... I>
constexpr bool aggregate_dense(std::index_sequence<I...>) {
  return sizeof...(I) > 0 && (dense<boost::pfr::tuple_element_t<I, T>>() && ...) &&
         (sizeof(boost::pfr::tuple_element_t<I, T>) + ... + 0) == sizeof(T);
}

template <class T>
constexpr bool dense() {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::scalar) return !std::is_same_v<T, long double>;
  else if constexpr (k == Kind::enumeration) return !std::is_same_v<std::underlying_type_t<T>, bool>;
  else if constexpr (k == Kind::array)
    return Shape<T>::size > 0 && dense<typename Shape<T>::value_type>() &&
           sizeof(T) == Shape<T>::size * sizeof(typename Shape<T>::value_type);
  else if constexpr (k == Kind::aggregate) {
    if constexpr (std::is_trivially_copyable_v<T> && serializable<T>())
      return aggregate_dense<T>(std::make_index_sequence<boost::pfr::tuple_size_v<T>>{});
    else return false;
  } else return false;
}
template <class T>
inline constexpr bool dense_v = dense<T>();

inline constexpr std::size_t kLongDoubleBytes =
    std::numeric_limits<long double>::digits == 64 ? 10 : sizeof(long double);

template <class T>
constexpr std::size_t scalar_size() {
  if constexpr (std::is_same_v<T, long double>) return kLongDoubleBytes;
  else return sizeof(T);
}

// The exact encoded size when it is the same for every value, else 0.
template <class T>
constexpr std::size_t fixed_size();

template <class... Ts>
constexpr std::size_t fixed_sum() {
  if constexpr (sizeof...(Ts) == 0) return 1;  // the empty marker
  else if constexpr (((fixed_size<Ts>() != 0) && ...)) return (fixed_size<Ts>() + ...);
  else return 0;
}
template <class T, std::size_t... I>
constexpr std::size_t aggregate_fixed(std::index_sequence<I...>) {
  return fixed_sum<boost::pfr::tuple_element_t<I, T>...>();
}

template <class T>
constexpr std::size_t fixed_size() {
  constexpr Kind k = kind_v<T>;
  if constexpr (dense_v<T>) return sizeof(T);
  else if constexpr (k == Kind::boolean || k == Kind::monostate) return 1;
  else if constexpr (k == Kind::enumeration) return 1;  // `enum E : bool`: validated like bool
  else if constexpr (k == Kind::scalar) return scalar_size<T>();
  else if constexpr (k == Kind::duration) return scalar_size<typename T::rep>();
  else if constexpr (k == Kind::array) {
    if constexpr (Shape<T>::size == 0) return 1;
    else return Shape<T>::size * fixed_size<typename Shape<T>::value_type>();
  } else if constexpr (k == Kind::pair) return fixed_sum<typename T::first_type, typename T::second_type>();
  else if constexpr (k == Kind::tuple)
    return []<class... Ts>(std::type_identity<std::tuple<Ts...>>) { return fixed_sum<Ts...>(); }(std::type_identity<T>{});
  else if constexpr (k == Kind::aggregate) {
    if constexpr (serializable<T>()) return aggregate_fixed<T>(std::make_index_sequence<boost::pfr::tuple_size_v<T>>{});
    else return 0;
  } else return 0;
}
template <class T>
inline constexpr std::size_t fixed_size_v = fixed_size<T>();

// The smallest encoding of any T: at least 1 (see the file comment).
template <class T>
constexpr std::size_t min_size();

template <class... Ts>
constexpr std::size_t min_sum() {
  if constexpr (sizeof...(Ts) == 0) return 1;
  else return (min_size<Ts>() + ...);
}
template <class T, std::size_t... I>
constexpr std::size_t aggregate_min(std::index_sequence<I...>) {
  return min_sum<boost::pfr::tuple_element_t<I, T>...>();
}

template <class T>
constexpr std::size_t min_size() {
  constexpr Kind k = kind_v<T>;
  if constexpr (fixed_size_v<T> != 0) return fixed_size_v<T>;
  else if constexpr (k == Kind::array) return Shape<T>::size * min_size<typename Shape<T>::value_type>();
  else if constexpr (k == Kind::pair) return min_sum<typename T::first_type, typename T::second_type>();
  else if constexpr (k == Kind::tuple)
    return []<class... Ts>(std::type_identity<std::tuple<Ts...>>) { return min_sum<Ts...>(); }(std::type_identity<T>{});
  else if constexpr (k == Kind::variant)
    return []<class... Ts>(std::type_identity<std::variant<Ts...>>) {
      return 1 + std::min({min_size<Ts>()...});
    }(std::type_identity<T>{});
  else if constexpr (k == Kind::aggregate) {
    if constexpr (serializable<T>()) return aggregate_min<T>(std::make_index_sequence<boost::pfr::tuple_size_v<T>>{});
    else return 1;
  } else return 1;  // counts, flags, length prefixes
}
template <class T>
inline constexpr std::size_t min_size_v = min_size<T>();
static_assert(min_size_v<std::monostate> == 1);

constexpr std::size_t varint_size(std::uint64_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Forward declarations: the encoders recurse through each other.
template <class T>
std::size_t size_hint(const T& v);
template <class T>
void encode(Writer& w, const T& v);
template <class T>
void decode_into(Reader& r, T& v);
template <class T>
T decode_value(Reader& r);

}  // namespace codec

// ---------------------------------------------------------------------------------------------
// Writer and Reader: the byte encoding, for mp_reduce / mp_rebuild and transports.

/// Appends encoded bytes to a std::string. Handed to `void mp_reduce(detail::Writer&) const`.
/// Not thread-safe (one Writer per message being built).
class Writer {
 public:
  /// Appends to `out`. `fds`, when given, collects descriptors that must travel out of band
  /// (SCM_RIGHTS) beside the bytes; the transport that passes it sends them.
  explicit Writer(std::string& out, std::vector<int>* fds = nullptr) noexcept
      : out_(&out), fds_(fds), fd_base_(fds ? fds->size() : 0) {
    cur_ = end_ = out.data() + out.size();
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  /// Trims the string to what was written. Never throws.
  ~Writer() { finish(); }

  /// Encodes any Serializable value (no message header), as the codec would inside a message.
  template <class T>
  void write(const T& value) {
    codec::encode(*this, value);
  }
  /// Appends raw bytes.
  void write_bytes(const void* data, std::size_t n) {
    if (static_cast<std::size_t>(end_ - cur_) < n && n >= kBulk) {
      append_bulk(data, n);
      return;
    }
    char* p = grab(n);
    if (n != 0) std::memcpy(p, data, n);
  }
  /// Appends an unsigned LEB128 varint (1 to 10 bytes).
  void write_varint(std::uint64_t v) {
    if (v < 0x80) {
      *grab(1) = static_cast<char>(v);
      return;
    }
    char buf[10];
    std::size_t n = 0;
    while (v >= 0x80) {
      buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    buf[n++] = static_cast<char>(v);
    write_bytes(buf, n);
  }
  /// True when this message can carry descriptors (the transport passed an fd list).
  bool carries_fds() const noexcept { return fds_ != nullptr; }
  /// Adds `fd` to the out-of-band descriptor list and returns its index within this message
  /// (write the index into the bytes; Reader::take_fd(index) gets the received copy back).
  /// The descriptor is borrowed: it must stay open until the message is sent.
  /// Throws mp::TypeError when the transport cannot carry descriptors.
  std::size_t add_fd(int fd) {
    if (fds_ == nullptr) {
      throw TypeError(
          "multiprocessing: this value carries a file descriptor and can only cross through a "
          "transport that passes descriptors (Connection, Queue), not a plain byte message");
    }
    fds_->push_back(fd);
    return fds_->size() - 1 - fd_base_;
  }

  // -- used by the codec --
  /// Enters / leaves one level of cereal or mp_reduce nesting; throws mp::ValueError past
  /// kMaxDepth, because the reader would refuse the message.
  void enter() {
    if (++depth_ > codec::kMaxDepth) {
      --depth_;
      throw ValueError("multiprocessing: cannot encode values nested deeper than " +
                       std::to_string(codec::kMaxDepth) + " levels");
    }
  }
  void leave() noexcept { --depth_; }
  /// Room for n bytes at the end; the returned pointer is valid until the next write.
  char* grab(std::size_t n) {
    if (static_cast<std::size_t>(end_ - cur_) < n) grow(n);
    char* p = cur_;
    cur_ += n;
    return p;
  }
  /// Makes sure n more bytes fit without growing again.
  void reserve(std::size_t n) {
    if (out_->capacity() - offset() < n) ensure_capacity(n, true);
  }
  /// Makes sure exactly n more bytes fit (beyond kSlack bytes capacity only: no zero-fill).
  void reserve_exact(std::size_t n) {
    if (static_cast<std::size_t>(end_ - cur_) >= n) return;
    if (n <= kSlack) {  // small: size it now, the zero-fill costs nothing
      const std::size_t used = offset();
      out_->resize(used + n);
      cur_ = out_->data() + used;
      end_ = out_->data() + out_->size();
    } else if (out_->capacity() - offset() < n) {
      ensure_capacity(n, false);
    }
  }
  /// Offset of the next byte from the start of the string.
  std::size_t offset() const noexcept { return static_cast<std::size_t>(cur_ - out_->data()); }
  /// Writes `len` as a varint into the one byte reserved at `at`, shifting the `len` bytes
  /// that follow when the varint needs more room.
  void patch_length(std::size_t at, std::size_t len) {
    if (len < 0x80) {
      out_->data()[at] = static_cast<char>(len);
      return;
    }
    const std::size_t k = codec::varint_size(len);
    grab(k - 1);
    char* base = out_->data();
    std::memmove(base + at + k, base + at + 1, len);
    for (std::size_t i = 0; i < k; ++i, len >>= 7) {
      base[at + i] = static_cast<char>((len & 0x7f) | (i + 1 < k ? 0x80 : 0));
    }
  }
  /// Trims the string to the bytes written so far (it may have been grown ahead).
  void finish() noexcept {
    // Shrinking never allocates, so resize cannot throw here.
    if (out_->data() + out_->size() != cur_) out_->resize(offset());
    end_ = cur_;
  }
  /// Drops everything written since `size` / the fds added since construction.
  void rollback(std::size_t size) noexcept {
    out_->resize(size);
    cur_ = end_ = out_->data() + size;
    if (fds_) fds_->resize(fd_base_);
  }

 private:
  // The string's size runs ahead of the writes by at most kSlack bytes (std::string can only
  // be written below its size, and resize() zero-fills); capacity is reserved separately, so
  // a large encoding is never zero-filled first. finish() trims the slack.
  static constexpr std::size_t kSlack = 256;
  static constexpr std::size_t kBulk = 1024;

  void ensure_capacity(std::size_t n, bool amortised) {
    const std::size_t used = offset();
    const std::size_t need = used + n;
    out_->reserve(amortised ? std::max(need, 2 * out_->capacity()) : need);
    cur_ = out_->data() + used;
    end_ = out_->data() + out_->size();
  }
  [[gnu::noinline]] void grow(std::size_t n) {
    const std::size_t used = offset();
    if (out_->capacity() < used + n) ensure_capacity(n, true);
    out_->resize(std::min(out_->capacity(), used + std::max(n, kSlack)));
    cur_ = out_->data() + used;
    end_ = out_->data() + out_->size();
  }
  // Large raw blocks (dense vectors, long strings) are appended: one memcpy, no zero-fill.
  [[gnu::noinline]] void append_bulk(const void* data, std::size_t n) {
    const std::size_t used = offset();
    out_->resize(used);  // drop the slack; shrinking never reallocates
    if (out_->capacity() < used + n) out_->reserve(std::max(used + n, 2 * out_->capacity()));
    out_->append(static_cast<const char*>(data), n);
    cur_ = end_ = out_->data() + out_->size();
  }

  std::string* out_;
  char* cur_;
  char* end_;
  std::vector<int>* fds_;
  std::size_t fd_base_;
  unsigned depth_ = 0;
};

/// Reads encoded bytes with every length checked. Handed to `static T mp_rebuild(detail::Reader&)`.
/// Every failure throws mp::DecodeError naming the offset. Not thread-safe.
class Reader {
 public:
  /// Reads `bytes`; `fds` are the descriptors received beside them (owned by the caller until
  /// take_fd() hands one over); `what` names the message's type in error messages.
  explicit Reader(std::string_view bytes, std::span<int> fds = {}, std::string_view what = {}) noexcept
      : begin_(bytes.data()), cur_(bytes.data()), end_(bytes.data() + bytes.size()), fds_(fds), what_(what) {}

  /// Decodes a value written by Writer::write<T>.
  template <class T>
  T read() {
    return codec::decode_value<T>(*this);
  }
  /// Decodes into an existing value (containers are cleared first).
  template <class T>
  void read_into(T& value) {
    codec::decode_into(*this, value);
  }
  /// The next n bytes, without copying (a view into the message).
  std::string_view read_bytes(std::size_t n) { return {take(n), n}; }
  /// Copies the next n bytes to `dst`.
  void read_bytes(void* dst, std::size_t n) {
    const char* p = take(n);
    if (n != 0) std::memcpy(dst, p, n);
  }
  /// A canonical unsigned LEB128 varint (at most 10 bytes, no redundant trailing zero group).
  std::uint64_t read_varint() {
    if (cur_ != end_ && static_cast<unsigned char>(*cur_) < 0x80) return static_cast<unsigned char>(*cur_++);
    return read_varint_slow();
  }
  /// An element count, checked so that `count * min_element_size` bytes actually remain:
  /// what a container may reserve is bounded by the bytes received.
  std::size_t read_count(std::size_t min_element_size) {
    const std::uint64_t n = read_varint();
    if (n > remaining() / min_element_size) fail_count(n, min_element_size);
    return static_cast<std::size_t>(n);
  }
  /// Bytes left to read.
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - cur_); }
  /// Takes ownership of the descriptor at `index` of this message's out-of-band list (the
  /// caller must close it). Throws mp::DecodeError if there is no such descriptor or it was
  /// already taken.
  int take_fd(std::size_t index) {
    if (index >= fds_.size() || fds_[index] < 0) fail("missing or already used file descriptor");
    const int fd = fds_[index];
    fds_[index] = -1;
    return fd;
  }

  // -- used by the codec --
  /// Enters / leaves one level of cereal or mp_reduce nesting; DecodeError past kMaxDepth.
  void enter() {
    if (++depth_ > codec::kMaxDepth) fail("values nested deeper than " + std::to_string(codec::kMaxDepth) + " levels");
  }
  void leave() noexcept { --depth_; }
  const char* take(std::size_t n) {
    if (remaining() < n) fail_truncated(n);
    const char* p = cur_;
    cur_ += n;
    return p;
  }
  unsigned char read_byte() { return static_cast<unsigned char>(*take(1)); }
  const char* limit() const noexcept { return end_; }
  void set_limit(const char* end) noexcept { end_ = end; }
  const char* position() const noexcept { return cur_; }
  std::string_view what() const noexcept { return what_; }

  /// Throws mp::DecodeError: "cannot decode <type>: <reason> at byte <offset>".
  [[noreturn, gnu::cold, gnu::noinline]] void fail(std::string_view reason) const {
    std::string m = "multiprocessing: cannot decode ";
    m += what_.empty() ? std::string_view("message") : what_;
    m += ": ";
    m += reason;
    m += " (at byte ";
    m += std::to_string(cur_ - begin_);
    m += ")";
    throw DecodeError(m);
  }

 private:
  [[noreturn, gnu::cold, gnu::noinline]] void fail_truncated(std::size_t n) const {
    fail("truncated: " + std::to_string(n) + " bytes needed, " + std::to_string(remaining()) + " left");
  }
  [[noreturn, gnu::cold, gnu::noinline]] void fail_count(std::uint64_t n, std::size_t min) const {
    fail("announced count " + std::to_string(n) + " needs at least " +
         (n > std::numeric_limits<std::uint64_t>::max() / min ? std::string("2^64")
                                                              : std::to_string(n * min)) +
         " bytes, only " + std::to_string(remaining()) + " left");
  }
  std::uint64_t read_varint_slow() {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < 10; ++i) {
      if (cur_ == end_) fail("truncated varint");
      const auto b = static_cast<unsigned char>(*cur_++);
      if (i == 9 && b > 1) fail("varint overflows 64 bits");
      v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) {
        if (b == 0 && i != 0) fail("non-canonical varint");
        return v;
      }
    }
    fail("varint longer than 10 bytes");
  }

  const char* begin_;
  const char* cur_;
  const char* end_;
  std::span<int> fds_;
  std::string_view what_;
  unsigned depth_ = 0;
};

namespace codec {

// ---------------------------------------------------------------------------------------------
// cereal-compatible archives: a class's serialize()/save()/load() runs against these, and each
// member it names is encoded by this codec (so every length stays bounds-checked).
// Supported inside serialize: ar(a, b, c), ar & x, ar << x / ar >> x, cereal::make_nvp /
// CEREAL_NVP, cereal::base_class / virtual_base_class, cereal::make_size_tag,
// cereal::binary_data. Not supported: versioned serialize(Archive&, std::uint32_t),
// load_and_construct, polymorphic pointers, cereal's own std-type serializers (std types go
// through this codec instead).

template <class T> struct is_nvp : std::false_type {};
template <class T> struct is_nvp<cereal::NameValuePair<T>> : std::true_type {};
template <class T> struct is_size_tag : std::false_type {};
template <class T> struct is_size_tag<cereal::SizeTag<T>> : std::true_type {};
template <class T> struct is_binary_data : std::false_type {};
template <class T> struct is_binary_data<cereal::BinaryData<T>> : std::true_type {};
template <class T> struct base_of { using type = void; };
template <class B> struct base_of<cereal::base_class<B>> { using type = B; };
template <class B> struct base_of<cereal::virtual_base_class<B>> { using type = B; };

template <class T>
void encode_cereal_body(Writer& w, const T& v);
template <class T>
void decode_cereal_body(Reader& r, T& v);

class CerealWriter {
 public:
  explicit CerealWriter(Writer& w) noexcept : w_(&w) {}
  template <class... Ts>
  CerealWriter& operator()(Ts&&... items) {
    (item(items), ...);
    return *this;
  }
  template <class T>
  CerealWriter& operator&(T&& x) {
    item(x);
    return *this;
  }
  template <class T>
  CerealWriter& operator<<(T&& x) {
    item(x);
    return *this;
  }
  Writer& writer() noexcept { return *w_; }

 private:
  template <class T>
  void item(const T& x) {
    using D = std::remove_cv_t<T>;
    if constexpr (is_nvp<D>::value) {
      item(x.value);
    } else if constexpr (is_size_tag<D>::value) {
      w_->write_varint(static_cast<std::uint64_t>(x.size));
    } else if constexpr (is_binary_data<D>::value) {
      w_->write_bytes(x.data, static_cast<std::size_t>(x.size));
    } else if constexpr (!std::is_void_v<typename base_of<D>::type>) {
      encode_cereal_body(*w_, *static_cast<const typename base_of<D>::type*>(x.base_ptr));
    } else {
      codec::encode(*w_, x);
    }
  }
  Writer* w_;
};

class CerealReader {
 public:
  explicit CerealReader(Reader& r) noexcept : r_(&r) {}
  template <class... Ts>
  CerealReader& operator()(Ts&&... items) {
    (item(items), ...);
    return *this;
  }
  template <class T>
  CerealReader& operator&(T&& x) {
    item(x);
    return *this;
  }
  template <class T>
  CerealReader& operator>>(T&& x) {
    item(x);
    return *this;
  }
  Reader& reader() noexcept { return *r_; }

 private:
  template <class T>
  void item(T& x) {
    using D = std::remove_cv_t<T>;
    if constexpr (is_nvp<D>::value) {
      item(x.value);
    } else if constexpr (is_size_tag<D>::value) {
      // A size a serialize() will resize by: bounded by the bytes left (each element costs
      // at least one byte), so a corrupt size cannot make it allocate without bound.
      const std::size_t n = r_->read_count(1);
      using S = std::remove_reference_t<decltype(x.size)>;
      if (static_cast<std::uint64_t>(n) > static_cast<std::uint64_t>(std::numeric_limits<S>::max())) {
        r_->fail("size tag out of range");
      }
      x.size = static_cast<S>(n);
    } else if constexpr (is_binary_data<D>::value) {
      r_->read_bytes(x.data, static_cast<std::size_t>(x.size));
    } else if constexpr (!std::is_void_v<typename base_of<D>::type>) {
      decode_cereal_body(*r_, *static_cast<typename base_of<D>::type*>(x.base_ptr));
    } else {
      static_assert(!std::is_const_v<T>, "multiprocessing: serialize() cannot load into a const member");
      codec::decode_into(*r_, x);
    }
  }
  Reader* r_;
};

// A class's serialize/save writes straight into the enclosing body (used for base classes,
// and inside the length-prefixed encoding of a cereal class).
template <class T>
void encode_cereal_body(Writer& w, const T& v) {
  if constexpr (kind_v<T> == Kind::cereal) {
    CerealWriter ar(w);
    T& m = const_cast<T&>(v);  // serialize() is non-const; it only reads when saving (as in cereal)
    if constexpr (CerealMemberSerialize<T>) cereal::access::member_serialize(ar, m);
    else if constexpr (CerealMemberSaveLoad<T>) cereal::access::member_save(ar, v);
    else if constexpr (CerealFreeSerialize<T>) serialize(ar, m);
    else save(ar, v);
  } else {
    codec::encode(w, v);
  }
}
template <class T>
void decode_cereal_body(Reader& r, T& v) {
  if constexpr (kind_v<T> == Kind::cereal) {
    CerealReader ar(r);
    if constexpr (CerealMemberSerialize<T>) cereal::access::member_serialize(ar, v);
    else if constexpr (CerealMemberSaveLoad<T>) cereal::access::member_load(ar, v);
    else if constexpr (CerealFreeSerialize<T>) serialize(ar, v);
    else load(ar, v);
  } else {
    codec::decode_into(r, v);
  }
}

template <class WriterOrReader>
class NestGuard {
 public:
  explicit NestGuard(WriterOrReader& x) : x_(x) { x_.enter(); }
  ~NestGuard() { x_.leave(); }
  NestGuard(const NestGuard&) = delete;
  NestGuard& operator=(const NestGuard&) = delete;

 private:
  WriterOrReader& x_;
};

// ---------------------------------------------------------------------------------------------
// Size hints: exact for everything but cereal / mp_reduce bodies (counted as their 1-byte
// minimum; the Writer grows for the rest).

template <class T>
std::size_t size_hint(const T& v) {
  constexpr Kind k = kind_v<T>;
  if constexpr (fixed_size_v<T> != 0) {
    return fixed_size_v<T>;
  } else if constexpr (k == Kind::string) {
    const std::size_t n = v.size() * sizeof(typename T::value_type);
    return varint_size(v.size()) + n;
  } else if constexpr (k == Kind::sequence || k == Kind::set || k == Kind::vector_bool) {
    using E = typename T::value_type;
    std::size_t n = varint_size(v.size());
    if constexpr (fixed_size_v<E> != 0) {
      n += v.size() * fixed_size_v<E>;
    } else {
      for (const auto& e : v) n += size_hint(e);
    }
    return n;
  } else if constexpr (k == Kind::map) {
    std::size_t n = varint_size(v.size());
    for (const auto& [key, val] : v) n += size_hint(key) + size_hint(val);
    return n;
  } else if constexpr (k == Kind::array) {
    std::size_t n = 0;
    for (const auto& e : v) n += size_hint(e);
    return n;
  } else if constexpr (k == Kind::pair) {
    return size_hint(v.first) + size_hint(v.second);
  } else if constexpr (k == Kind::tuple) {
    return std::apply([](const auto&... e) { return (std::size_t{0} + ... + size_hint(e)); }, v);
  } else if constexpr (k == Kind::optional) {
    return 1 + (v ? size_hint(*v) : 0);
  } else if constexpr (k == Kind::variant) {
    if (v.valueless_by_exception()) return 1;
    return varint_size(v.index()) + std::visit([](const auto& a) { return size_hint(a); }, v);
  } else if constexpr (k == Kind::aggregate) {
    std::size_t n = 0;
    boost::pfr::for_each_field(v, [&n](const auto& f) { n += size_hint(f); });
    return n;
  } else {
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

template <class T>
void encode_scalar(Writer& w, const T& v) {
  std::memcpy(w.grab(scalar_size<T>()), &v, scalar_size<T>());
}

template <class Tuple, std::size_t... I>
void encode_tuple(Writer& w, const Tuple& t, std::index_sequence<I...>) {
  if constexpr (sizeof...(I) == 0) *w.grab(1) = 0;
  else (encode(w, std::get<I>(t)), ...);
}

template <class T>
void encode(Writer& w, const T& v) {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::unsupported) {
    refuse<T>();
  } else if constexpr (bad_duration<T>()) {
    refuse<T>();
  } else if constexpr (dense_v<T>) {
    std::memcpy(w.grab(sizeof(T)), &v, sizeof(T));
  } else if constexpr (k == Kind::boolean) {
    *w.grab(1) = v ? 1 : 0;
  } else if constexpr (k == Kind::enumeration) {  // underlying bool
    encode(w, static_cast<std::underlying_type_t<T>>(v));
  } else if constexpr (k == Kind::scalar) {
    encode_scalar(w, v);
  } else if constexpr (k == Kind::duration) {
    encode_scalar(w, v.count());
  } else if constexpr (k == Kind::string) {
    w.write_varint(v.size());
    w.write_bytes(v.data(), v.size() * sizeof(typename T::value_type));
  } else if constexpr (k == Kind::sequence || k == Kind::set || k == Kind::vector_bool) {
    using E = typename T::value_type;
    w.write_varint(v.size());
    if constexpr (dense_v<E> && k == Kind::sequence && std::is_same_v<T, std::vector<E, typename T::allocator_type>>) {
      w.write_bytes(v.data(), v.size() * sizeof(E));
    } else {
      if constexpr (fixed_size_v<E> != 0) w.reserve(v.size() * fixed_size_v<E>);
      for (const auto& e : v) encode(w, static_cast<const E&>(e));
    }
  } else if constexpr (k == Kind::map) {
    w.write_varint(v.size());
    for (const auto& [key, val] : v) {
      encode(w, key);
      encode(w, val);
    }
  } else if constexpr (k == Kind::array) {
    if constexpr (Shape<T>::size == 0) *w.grab(1) = 0;
    else for (const auto& e : v) encode(w, e);
  } else if constexpr (k == Kind::pair) {
    encode(w, v.first);
    encode(w, v.second);
  } else if constexpr (k == Kind::tuple) {
    encode_tuple(w, v, std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (k == Kind::optional) {
    *w.grab(1) = v ? 1 : 0;
    if (v) encode(w, *v);
  } else if constexpr (k == Kind::variant) {
    if (v.valueless_by_exception()) {
      throw ValueError("multiprocessing: cannot encode a valueless std::variant (" +
                       std::string(name_v<T>.view()) + ")");
    }
    w.write_varint(v.index());
    std::visit([&w](const auto& a) { encode(w, a); }, v);
  } else if constexpr (k == Kind::monostate) {
    *w.grab(1) = 0;
  } else if constexpr (k == Kind::aggregate) {
    if constexpr (boost::pfr::tuple_size_v<T> == 0) *w.grab(1) = 0;
    else boost::pfr::for_each_field(v, [&w](const auto& f) { encode(w, f); });
  } else if constexpr (k == Kind::cereal || k == Kind::reduce) {
    // Length-prefixed body: user code cannot make the reader run past its own value, and a
    // serialize() that reads differently from how it writes is caught as a DecodeError.
    NestGuard<Writer> nest(w);
    const std::size_t at = w.offset();
    w.grab(1);
    if constexpr (k == Kind::cereal) encode_cereal_body(w, v);
    else v.mp_reduce(w);
    w.patch_length(at, w.offset() - at - 1);
  } else {
    refuse<T>();
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding. decode_into overwrites an existing value (containers are cleared); decode_value
// builds one. Every count is checked against the bytes left before anything is reserved.

template <class T>
T decode_value(Reader& r) {
  if constexpr (kind_v<T> == Kind::reduce) {
    NestGuard<Reader> nest(r);
    const std::size_t len = r.read_count(1);
    const char* saved = r.limit();
    const char* body_end = r.position() + len;
    r.set_limit(body_end);
    T value = T::mp_rebuild(r);
    if (r.position() != body_end) r.fail("mp_rebuild() did not read the whole value");
    r.set_limit(saved);
    return value;
  } else if constexpr (kind_v<T> == Kind::tuple) {
    // Built from its decoded elements (braced initialization evaluates left to right), so
    // elements need not be default-constructible: handles rebuilt by mp_rebuild, for one.
    if constexpr (std::tuple_size_v<T> == 0) {
      if (r.read_byte() != 0) r.fail("bad empty-value marker");
      return T{};
    } else {
      return []<class... Ts>(Reader& rd, std::type_identity<std::tuple<Ts...>>) {
        return T{decode_value<Ts>(rd)...};
      }(r, std::type_identity<T>{});
    }
  } else if constexpr (kind_v<T> == Kind::pair) {
    auto first = decode_value<typename T::first_type>(r);
    auto second = decode_value<typename T::second_type>(r);
    return T{std::move(first), std::move(second)};
  } else {
    static_assert(std::is_default_constructible_v<T> || kind_v<T> == Kind::unsupported,
                  "multiprocessing: a type decoded by value must be default-constructible "
                  "(an aggregate with a reference or const member is not), or provide mp_rebuild");
    T value{};
    decode_into(r, value);
    return value;
  }
}

// Reads dense Es from possibly unaligned bytes (memcpy per element, which compilers turn into
// plain loads), so that a vector can be constructed from the message in one pass.
template <class E>
struct UnalignedIter {
  using iterator_category = std::random_access_iterator_tag;
  using value_type = E;
  using difference_type = std::ptrdiff_t;
  using pointer = const E*;
  using reference = E;
  const char* p;
  E operator*() const noexcept {
    E e;
    std::memcpy(&e, p, sizeof(E));
    return e;
  }
  UnalignedIter& operator++() noexcept {
    p += sizeof(E);
    return *this;
  }
  UnalignedIter operator++(int) noexcept {
    UnalignedIter old = *this;
    p += sizeof(E);
    return old;
  }
  UnalignedIter& operator--() noexcept {
    p -= sizeof(E);
    return *this;
  }
  UnalignedIter& operator+=(difference_type d) noexcept {
    p += d * static_cast<difference_type>(sizeof(E));
    return *this;
  }
  difference_type operator-(const UnalignedIter& o) const noexcept {
    return (p - o.p) / static_cast<difference_type>(sizeof(E));
  }
  bool operator==(const UnalignedIter& o) const noexcept { return p == o.p; }
};

template <class C>
void decode_append(Reader& r, C& c) {
  using E = typename C::value_type;
  if constexpr (std::is_default_constructible_v<E> && kind_v<E> != Kind::reduce) {
    decode_into(r, c.emplace_back());
  } else {
    c.push_back(decode_value<E>(r));
  }
}

template <class T>
void decode_into(Reader& r, T& v) {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::unsupported) {
    refuse<T>();
  } else if constexpr (bad_duration<T>()) {
    refuse<T>();
  } else if constexpr (dense_v<T>) {
    std::memcpy(&v, r.take(sizeof(T)), sizeof(T));
  } else if constexpr (k == Kind::boolean) {
    const unsigned char b = r.read_byte();
    if (b > 1) r.fail("bool byte is neither 0 nor 1");
    v = b != 0;
  } else if constexpr (k == Kind::enumeration) {  // underlying bool
    std::underlying_type_t<T> u{};
    decode_into(r, u);
    v = static_cast<T>(u);
  } else if constexpr (k == Kind::scalar) {  // long double
    v = T{};
    std::memcpy(&v, r.take(scalar_size<T>()), scalar_size<T>());
  } else if constexpr (k == Kind::duration) {
    typename T::rep count{};
    decode_into(r, count);
    v = T(count);
  } else if constexpr (k == Kind::string) {
    using C = typename T::value_type;
    const std::size_t n = r.read_count(sizeof(C));
    if constexpr (std::is_same_v<C, char>) {
      v.assign(r.take(n), n);
    } else {
      v.resize(n);
      r.read_bytes(v.data(), n * sizeof(C));
    }
  } else if constexpr (k == Kind::vector_bool) {
    const std::size_t n = r.read_count(1);
    v.clear();
    v.reserve(n);
    const char* p = r.take(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (static_cast<unsigned char>(p[i]) > 1) r.fail("bool byte is neither 0 nor 1");
      v.push_back(p[i] != 0);
    }
  } else if constexpr (k == Kind::sequence) {
    using E = typename T::value_type;
    constexpr bool is_vector = std::is_same_v<T, std::vector<E, typename T::allocator_type>>;
    if constexpr (dense_v<E> && is_vector) {
      const std::size_t n = r.read_count(sizeof(E));
      const char* p = r.take(n * sizeof(E));
      if (n > v.capacity()) {
        // Built straight from the bytes: no value-initialisation pass before the copy.
        v.assign(UnalignedIter<E>{p}, UnalignedIter<E>{p + n * sizeof(E)});
      } else {
        v.resize(n);
        if (n != 0) std::memcpy(v.data(), p, n * sizeof(E));
      }
    } else {
      const std::size_t n = r.read_count(min_size_v<E>);
      v.clear();
      if constexpr (is_vector) v.reserve(n);
      for (std::size_t i = 0; i < n; ++i) decode_append(r, v);
    }
  } else if constexpr (k == Kind::map) {
    using K = typename Shape<T>::key_type;
    using V = typename Shape<T>::mapped_type;
    const std::size_t n = r.read_count(min_size_v<K> + min_size_v<V>);
    v.clear();
    constexpr bool ordered = requires { v.key_comp(); };
    if constexpr (!ordered) v.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      K key = decode_value<K>(r);
      if constexpr (Shape<T>::multi) {
        v.emplace(std::move(key), decode_value<V>(r));
      } else if constexpr (std::is_default_constructible_v<V> && kind_v<V> != Kind::reduce) {
        const std::size_t before = v.size();
        auto it = [&] {
          if constexpr (ordered) return v.try_emplace(v.end(), std::move(key));
          else return v.try_emplace(std::move(key)).first;
        }();
        if (v.size() == before) r.fail("duplicate map key");
        decode_into(r, it->second);
      } else {
        if (v.find(key) != v.end()) r.fail("duplicate map key");
        v.emplace(std::move(key), decode_value<V>(r));
      }
    }
  } else if constexpr (k == Kind::set) {
    using K = typename Shape<T>::key_type;
    const std::size_t n = r.read_count(min_size_v<K>);
    v.clear();
    constexpr bool ordered = requires { v.key_comp(); };
    if constexpr (!ordered) v.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t before = v.size();
      if constexpr (ordered) v.emplace_hint(v.end(), decode_value<K>(r));
      else v.emplace(decode_value<K>(r));
      if (!Shape<T>::multi && v.size() == before) r.fail("duplicate set element");
    }
  } else if constexpr (k == Kind::array) {
    if constexpr (Shape<T>::size == 0) {
      if (r.read_byte() != 0) r.fail("bad empty-value marker");
    } else {
      for (auto& e : v) decode_into(r, e);
    }
  } else if constexpr (k == Kind::pair) {
    decode_into(r, v.first);
    decode_into(r, v.second);
  } else if constexpr (k == Kind::tuple) {
    if constexpr (std::tuple_size_v<T> == 0) {
      if (r.read_byte() != 0) r.fail("bad empty-value marker");
    } else {
      std::apply([&r](auto&... e) { (decode_into(r, e), ...); }, v);
    }
  } else if constexpr (k == Kind::optional) {
    using E = typename T::value_type;
    const unsigned char flag = r.read_byte();
    if (flag == 0) {
      v.reset();
    } else if (flag == 1) {
      if constexpr (std::is_default_constructible_v<E> && kind_v<E> != Kind::reduce) {
        if (!v) v.emplace();
        decode_into(r, *v);
      } else {
        v.emplace(decode_value<E>(r));
      }
    } else {
      r.fail("optional flag is neither 0 nor 1");
    }
  } else if constexpr (k == Kind::variant) {
    const std::uint64_t index = r.read_varint();
    if (index >= std::variant_size_v<T>) r.fail("variant index out of range");
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (void)((index == I ? ([&] {
        using A = std::variant_alternative_t<I, T>;
        if constexpr (std::is_default_constructible_v<A> && kind_v<A> != Kind::reduce) {
          decode_into(r, v.template emplace<I>());
        } else {
          v.template emplace<I>(decode_value<A>(r));
        }
      }(), true) : false) || ...);
    }(std::make_index_sequence<std::variant_size_v<T>>{});
  } else if constexpr (k == Kind::monostate) {
    if (r.read_byte() != 0) r.fail("bad empty-value marker");
  } else if constexpr (k == Kind::aggregate) {
    if constexpr (boost::pfr::tuple_size_v<T> == 0) {
      if (r.read_byte() != 0) r.fail("bad empty-value marker");
    } else {
      boost::pfr::for_each_field(v, [&r](auto& f) { decode_into(r, f); });
    }
  } else if constexpr (k == Kind::cereal) {
    NestGuard<Reader> nest(r);
    const std::size_t len = r.read_count(1);
    const char* saved = r.limit();
    const char* body_end = r.position() + len;
    r.set_limit(body_end);
    decode_cereal_body(r, v);
    if (r.position() != body_end) r.fail("serialize() read fewer bytes than it wrote");
    r.set_limit(saved);
  } else if constexpr (k == Kind::reduce) {
    v = decode_value<T>(r);
  } else {
    refuse<T>();
  }
}

}  // namespace codec
}  // namespace multiprocessing::detail
