// test_reduction.cpp: the codec (Python: reduction.py / pickle): round trips of every supported
// type, aggregates, cereal classes, the dense fast path, type tags, and hostile input
// (truncation, corruption, huge counts, trailing bytes) that must throw, never crash.
#include <multiprocessing/reduction.hpp>

#include <cereal/cereal.hpp>
#include <cereal/types/polymorphic.hpp>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>

#include "support/mp_test.hpp"

namespace mp = multiprocessing;
namespace red = mp::reduction;
using mp::detail::codec::dense_v;

// ---------------------------------------------------------------------------------------------
// Test types.

namespace shapes {
struct Point {  // dense: two ints, no padding
  int x = 0, y = 0;
  bool operator==(const Point&) const = default;
};
struct Padded {  // trivially copyable but padded: field by field
  char c = 0;
  double d = 0;
  bool operator==(const Padded&) const = default;
};
struct Flags {  // holds a bool: never memcpy'd
  int n = 0;
  bool on = false;
  bool operator==(const Flags&) const = default;
};
struct Person {  // an aggregate with no boilerplate
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  std::optional<Point> home;
  std::map<std::string, double> scores;
  bool operator==(const Person&) const = default;
};
struct Empty {
  bool operator==(const Empty&) const = default;
};
enum class Color : std::uint8_t { red, green, blue };
enum Legacy : int { kA = 1, kB = 2 };
enum class Switch : bool { off, on };  // only 0 and 1 are valid: never memcpy'd
}  // namespace shapes
using namespace shapes;

// cereal classes, every supported form.
class Account {
 public:
  Account() = default;
  Account(std::string owner, long cents) : owner_(std::move(owner)), cents_(cents) {}
  bool operator==(const Account&) const = default;

 private:
  friend class cereal::access;  // private serialize, as cereal allows
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(owner_), cereal::make_nvp("cents", cents_));
  }
  std::string owner_;
  long cents_ = 0;
};

struct Ampersand {
  int a = 0;
  std::vector<int> b;
  template <class Archive>
  void serialize(Archive& ar) {
    ar & a & b;
  }
  bool operator==(const Ampersand&) const = default;
};

struct SaveLoad {
  std::string text;
  template <class Archive>
  void save(Archive& ar) const {
    ar(text);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(text);
  }
  bool operator==(const SaveLoad&) const = default;
};

namespace freeform {
struct Pt3 {
  double x = 0, y = 0, z = 0;
  Pt3() = default;  // not an aggregate: only the free serialize makes it cross
  Pt3(double a, double b, double c) : x(a), y(b), z(c) {}
  bool operator==(const Pt3&) const = default;
};
template <class Archive>
void serialize(Archive& ar, Pt3& p) {
  ar(p.x, p.y, p.z);
}
}  // namespace freeform

class Shape {  // polymorphic: cereal wants <cereal/types/polymorphic.hpp> for base_class
 public:
  virtual ~Shape() = default;
  std::string label;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(label);
  }
};
class Circle : public Shape {
 public:
  double r = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(cereal::base_class<Shape>(this), r);
  }
};

struct Blob {  // size tag + binary data
  std::vector<std::uint16_t> words;
  template <class Archive>
  void save(Archive& ar) const {
    ar(cereal::make_size_tag(static_cast<std::uint64_t>(words.size())));
    ar(cereal::binary_data(words.data(), words.size() * sizeof(std::uint16_t)));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t n = 0;
    ar(cereal::make_size_tag(n));
    words.resize(n);
    ar(cereal::binary_data(words.data(), n * sizeof(std::uint16_t)));
  }
};

// A recursive type: aggregates cannot contain themselves, cereal classes can.
struct Tree {
  int v = 0;
  std::vector<Tree> kids;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(v, kids);
  }
};

// Counts live instances, to show that failed decodes leak nothing.
struct Counted {
  static inline std::atomic<long> live{0};
  std::string s = "x";
  int v = 0;
  Counted() { ++live; }
  Counted(const Counted& o) : s(o.s), v(o.v) { ++live; }
  Counted(Counted&& o) noexcept : s(std::move(o.s)), v(o.v) { ++live; }
  Counted& operator=(const Counted&) = default;
  Counted& operator=(Counted&&) = default;
  ~Counted() { --live; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(s, v);
  }
};

// A serialize() whose load reads differently from its save: caught, not trusted.
struct Liar {
  int a = 0, b = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(a, b);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(a);
  }
};

// A serialize() that throws while saving.
struct Thrower {
  template <class Archive>
  void serialize(Archive& ar) {
    ar(1, 2, 3);
    throw std::runtime_error("boom");
  }
};

// Throws when copied: makes a valueless variant.
struct Bomb {
  Bomb() = default;
  Bomb(const Bomb&) { throw std::runtime_error("copy"); }
  Bomb& operator=(const Bomb&) = default;
  template <class A>
  void serialize(A&) {}
};

// The extension point: a toy handle that owns a descriptor and carries it out of band.
class FdBox {
 public:
  FdBox() = default;
  FdBox(int fd, std::string tag) : fd_(fd), tag_(std::move(tag)) {}
  FdBox(FdBox&& o) noexcept : fd_(std::exchange(o.fd_, -1)), tag_(std::move(o.tag_)) {}
  FdBox& operator=(FdBox&& o) noexcept {
    std::swap(fd_, o.fd_);
    std::swap(tag_, o.tag_);
    return *this;
  }
  ~FdBox() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  const std::string& tag() const { return tag_; }

  void mp_reduce(mp::detail::Writer& w) const {
    w.write_varint(w.add_fd(fd_));  // the index of the descriptor within this message
    w.write(tag_);
  }
  static FdBox mp_rebuild(mp::detail::Reader& r) {
    const auto index = static_cast<std::size_t>(r.read_varint());
    FdBox box(r.take_fd(index), "");  // owned from here on, even if the rest fails
    box.tag_ = r.read<std::string>();
    return box;
  }

 private:
  int fd_ = -1;
  std::string tag_;
};

// An mp_reduce type without default constructor, used inside containers.
class Token {
 public:
  explicit Token(int v) : v_(v) {}
  int value() const { return v_; }
  void mp_reduce(mp::detail::Writer& w) const { w.write(v_); }
  static Token mp_rebuild(mp::detail::Reader& r) { return Token(r.read<int>()); }

 private:
  int v_;
};

// ---------------------------------------------------------------------------------------------
// Helpers.

template <class T>
T round_trip(const T& v) {
  return red::loads<T>(red::dumps(v));
}

#define EXPECT_ROUND_TRIP(value)                                 \
  do {                                                           \
    const auto v_ = (value);                                     \
    EXPECT_EQ(round_trip(v_), v_) << red::type_name<decltype(v_)>(); \
  } while (0)

// The 9-byte header of a message of T, to build hostile messages by hand.
template <class T>
std::string header() {
  std::string m = red::dumps(T{});
  return m.substr(0, 9);
}
std::string varint(std::uint64_t v) {
  std::string s;
  while (v >= 0x80) {
    s += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  s += static_cast<char>(v);
  return s;
}

// Decodes `bytes` as T; true when it decoded, false on DecodeError/TypeError. Anything else
// (another exception, a crash under the sanitizers) fails the test.
template <class T>
bool decodes(std::string_view bytes) {
  try {
    (void)red::loads<T>(bytes);
    return true;
  } catch (const mp::DecodeError&) {
    return false;
  } catch (const mp::TypeError&) {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips.

TEST(Reduction, ScalarsRoundTrip) {
  EXPECT_ROUND_TRIP(true);
  EXPECT_ROUND_TRIP(false);
  EXPECT_ROUND_TRIP('z');
  EXPECT_ROUND_TRIP(static_cast<signed char>(-5));
  EXPECT_ROUND_TRIP(static_cast<unsigned char>(250));
  EXPECT_ROUND_TRIP(static_cast<short>(-30000));
  EXPECT_ROUND_TRIP(std::numeric_limits<int>::min());
  EXPECT_ROUND_TRIP(std::numeric_limits<unsigned>::max());
  EXPECT_ROUND_TRIP(std::numeric_limits<long>::min());
  EXPECT_ROUND_TRIP(std::numeric_limits<unsigned long long>::max());
  EXPECT_ROUND_TRIP(3.5f);
  EXPECT_ROUND_TRIP(-0.0);
  EXPECT_ROUND_TRIP(std::numeric_limits<double>::infinity());
  EXPECT_ROUND_TRIP(1.0L / 3.0L);
  EXPECT_ROUND_TRIP(u'\u00e9');
  EXPECT_ROUND_TRIP(U'\U0001F600');
  EXPECT_ROUND_TRIP(Color::blue);
  EXPECT_ROUND_TRIP(kB);
  EXPECT_ROUND_TRIP(Switch::on);
  EXPECT_TRUE(round_trip(std::u8string(u8"utf-8")) == u8"utf-8");  // (gtest cannot print u8string)
  EXPECT_ROUND_TRIP(std::byte{0xAB});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(std::isnan(round_trip(nan)));
}

TEST(Reduction, StringsRoundTrip) {
  EXPECT_ROUND_TRIP(std::string());
  EXPECT_ROUND_TRIP(std::string("short"));
  EXPECT_ROUND_TRIP(std::string(100000, 'q'));
  EXPECT_ROUND_TRIP(std::string("nul\0inside", 10));
  EXPECT_ROUND_TRIP(std::u16string(u"h\u00e9llo"));
  EXPECT_ROUND_TRIP(std::u32string(U"\U0001F600 x"));
  EXPECT_ROUND_TRIP(std::wstring(L"wide"));
}

TEST(Reduction, ContainersRoundTrip) {
  EXPECT_ROUND_TRIP(std::vector<int>{});
  EXPECT_ROUND_TRIP((std::vector<int>{1, -2, 3}));
  EXPECT_ROUND_TRIP((std::vector<bool>{true, false, true, true}));
  EXPECT_ROUND_TRIP((std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_ROUND_TRIP((std::deque<double>{1.5, 2.5}));
  EXPECT_ROUND_TRIP((std::list<std::string>{"x", "y"}));
  EXPECT_ROUND_TRIP((std::array<int, 3>{7, 8, 9}));
  EXPECT_ROUND_TRIP((std::array<std::string, 2>{"p", "q"}));
  EXPECT_ROUND_TRIP((std::array<int, 0>{}));
  EXPECT_ROUND_TRIP((std::map<std::string, int>{{"one", 1}, {"two", 2}}));
  EXPECT_ROUND_TRIP((std::multimap<int, int>{{1, 1}, {1, 2}, {0, 5}}));
  EXPECT_ROUND_TRIP((std::unordered_map<int, std::string>{{1, "a"}, {2, "b"}}));
  EXPECT_ROUND_TRIP((std::unordered_multimap<int, int>{{1, 1}, {1, 1}}));
  EXPECT_ROUND_TRIP((std::set<std::string>{"b", "a"}));
  EXPECT_ROUND_TRIP((std::multiset<int>{3, 3, 1}));
  EXPECT_ROUND_TRIP((std::unordered_set<long>{10, 20, 30}));
  EXPECT_ROUND_TRIP((std::unordered_multiset<int>{4, 4}));
  EXPECT_ROUND_TRIP((std::map<int, int, std::greater<>>{{1, 2}, {3, 4}}));
}

TEST(Reduction, ProductAndSumTypesRoundTrip) {
  EXPECT_ROUND_TRIP(std::make_pair(1, std::string("one")));
  EXPECT_ROUND_TRIP(std::make_tuple(1, 2.5, std::string("s"), Color::green));
  EXPECT_ROUND_TRIP(std::tuple<>());
  EXPECT_ROUND_TRIP(std::optional<int>());
  EXPECT_ROUND_TRIP(std::optional<std::string>("here"));
  using V = std::variant<std::monostate, int, std::string, std::vector<double>>;
  EXPECT_ROUND_TRIP(V());
  EXPECT_ROUND_TRIP(V(42));
  EXPECT_ROUND_TRIP(V(std::string("str")));
  EXPECT_ROUND_TRIP(V(std::vector<double>{1, 2}));
  using Same = std::variant<int, int>;  // same type twice: the index decides
  auto s = round_trip(Same(std::in_place_index<1>, 5));
  EXPECT_EQ(s.index(), 1u);
  EXPECT_EQ(std::get<1>(s), 5);
  EXPECT_ROUND_TRIP(std::monostate());
  EXPECT_ROUND_TRIP(std::chrono::milliseconds(1234));
  EXPECT_ROUND_TRIP(std::chrono::duration<double>(0.25));
}

TEST(Reduction, DeepNestingRoundTrips) {
  using Deep = std::map<std::string, std::vector<std::optional<std::variant<int, std::string, std::vector<Point>>>>>;
  Deep d;
  d["a"] = {std::nullopt, 5, std::string("five"), std::vector<Point>{{1, 2}, {3, 4}}};
  d["b"] = {};
  EXPECT_ROUND_TRIP(d);
  std::vector<std::vector<std::vector<int>>> cube(3, std::vector<std::vector<int>>(4, std::vector<int>(5, 7)));
  EXPECT_ROUND_TRIP(cube);
  std::unordered_map<std::string, std::pair<std::set<int>, std::deque<std::string>>> m;
  m["k"] = {{1, 2}, {"x"}};
  EXPECT_ROUND_TRIP(m);
}

TEST(Reduction, AggregatesWithoutBoilerplate) {
  Person p{"Ada", 36, {"math", "engines"}, Point{1, 2}, {{"logic", 9.5}}};
  EXPECT_ROUND_TRIP(p);
  EXPECT_ROUND_TRIP(Person{});
  EXPECT_ROUND_TRIP((std::vector<Person>{p, Person{"Bob", 1, {}, std::nullopt, {}}}));
  EXPECT_ROUND_TRIP((Padded{'c', 2.5}));
  EXPECT_ROUND_TRIP((Flags{3, true}));
  EXPECT_ROUND_TRIP(Empty{});
  EXPECT_ROUND_TRIP((std::vector<Empty>(3)));
  EXPECT_ROUND_TRIP((std::map<Color, std::vector<Flags>>{{Color::red, {{1, true}}}}));
}

TEST(Reduction, CerealClassesAllForms) {
  EXPECT_ROUND_TRIP(Account("carol", 12345));
  EXPECT_ROUND_TRIP((Ampersand{7, {1, 2, 3}}));
  EXPECT_ROUND_TRIP(SaveLoad{"saved"});
  EXPECT_ROUND_TRIP(freeform::Pt3(1, 2, 3));
  EXPECT_ROUND_TRIP((std::vector<Account>{Account("a", 1), Account("b", 2)}));
  EXPECT_ROUND_TRIP((std::map<std::string, Account>{{"k", Account("x", -5)}}));

  Circle c;
  c.label = "unit";
  c.r = 1.5;
  Circle c2 = round_trip(c);
  EXPECT_EQ(c2.label, "unit");
  EXPECT_EQ(c2.r, 1.5);

  Blob b;
  b.words = {1, 2, 65535};
  EXPECT_EQ(round_trip(b).words, b.words);

  // A body longer than 127 bytes exercises the multi-byte length prefix.
  EXPECT_ROUND_TRIP(Account(std::string(300, 'o'), 1));
  EXPECT_ROUND_TRIP(Account(std::string(70000, 'o'), 1));
}

TEST(Reduction, CerealSerializeThatReadsLessIsADecodeError) {
  const std::string m = red::dumps(Liar{1, 2});
  EXPECT_THROW(red::loads<Liar>(m), mp::DecodeError);
}

TEST(Reduction, CerealSizeTagIsBoundedByTheBytesLeft) {
  // A Blob announcing 2^40 words must not resize to them.
  std::string m = header<Blob>();
  std::string body = varint(std::uint64_t{1} << 40) + "xx";
  m += varint(body.size()) + body;
  EXPECT_THROW(red::loads<Blob>(m), mp::DecodeError);
}

TEST(Reduction, SerializableConcept) {
  static_assert(red::Serializable<int>);
  static_assert(red::Serializable<const std::string>);
  static_assert(red::Serializable<std::vector<std::map<int, std::optional<Person>>>>);
  static_assert(red::Serializable<Account>);
  static_assert(red::Serializable<FdBox>);
  static_assert(red::Serializable<Color>);
  static_assert(!red::Serializable<int*>);
  static_assert(!red::Serializable<int&>);
  static_assert(!red::Serializable<std::string_view>);
  static_assert(!red::Serializable<std::unique_ptr<int>>);
  static_assert(!red::Serializable<std::vector<const char*>>);
  static_assert(!red::Serializable<std::pair<int, std::span<int>>>);
  struct WithPointer {
    int* p;
  };
  static_assert(!red::Serializable<WithPointer>);
  enum Plain { p0, p1 };  // no fixed underlying type: values cannot be validated
  static_assert(!red::Serializable<Plain>);
  SUCCEED();
}

// ---------------------------------------------------------------------------------------------
// Fast path.

TEST(Reduction, DenseTypesAreMemcpyd) {
  static_assert(dense_v<int> && dense_v<double> && dense_v<Color> && dense_v<Point>);
  static_assert(dense_v<std::array<Point, 4>>);
  static_assert(!dense_v<bool>, "bool must be validated");
  static_assert(!dense_v<Flags>, "a bool field must be validated");
  static_assert(!dense_v<Padded>, "padding bytes must not leak");
  static_assert(!dense_v<long double>, "long double has padding");
  static_assert(!dense_v<std::pair<int, int>>);

  std::vector<Point> pts{{1, 2}, {3, 4}, {5, 6}};
  const std::string m = red::dumps(pts);
  // header, one count byte, then the vector's memory as is
  ASSERT_EQ(m.size(), 9 + 1 + pts.size() * sizeof(Point));
  EXPECT_EQ(std::memcmp(m.data() + 10, pts.data(), pts.size() * sizeof(Point)), 0);
  EXPECT_EQ(red::loads<std::vector<Point>>(m), pts);

  std::vector<std::uint16_t> big(100000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint16_t>(i * 7);
  EXPECT_EQ(round_trip(big), big);
}

TEST(Reduction, IntMessageIsSmallAndDoesNotAllocate) {
  // The codec allocates nothing of its own (the Writer writes into the output string), and an
  // int's message fits the string's small buffer: no heap block at all.
  std::string m = red::dumps(123456);
  EXPECT_EQ(m.size(), 9u + sizeof(int));
  const char* self = reinterpret_cast<const char*>(&m);
  EXPECT_TRUE(m.data() >= self && m.data() < self + sizeof(m)) << "the message went to the heap";
  EXPECT_EQ(red::loads<int>(m), 123456);
}

TEST(Reduction, DumpIntoAppendsAndLoadPrefixReadsInOrder) {
  std::string buf = "prefix";
  red::dump_into(buf, 1);
  red::dump_into(buf, std::string("two"));
  red::dump_into(buf, std::vector<int>{3});
  std::string_view in(buf);
  in.remove_prefix(6);
  EXPECT_EQ(red::load_prefix<int>(in), 1);
  EXPECT_EQ(red::load_prefix<std::string>(in), "two");
  EXPECT_EQ(red::load_prefix<std::vector<int>>(in), std::vector<int>{3});
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(buf.substr(0, 6), "prefix");
}

TEST(Reduction, WriterGrowsThroughUnknownSizes) {
  // cereal bodies have no size hint: the Writer grows while it writes, small pieces into its
  // slack, long strings appended in bulk, length prefixes widened after the fact.
  std::mt19937 rng(7);
  std::vector<Account> accounts;
  for (int i = 0; i < 2000; ++i) accounts.emplace_back(std::string(rng() % 3000, 'a' + static_cast<char>(i % 26)), i);
  std::string buf(1000, 'p');  // appended after existing content
  red::dump_into(buf, accounts);
  red::dump_into(buf, std::vector<double>(50000, 0.5));
  red::dump_into(buf, Account("tail", -1));
  std::string_view in(buf);
  in.remove_prefix(1000);
  EXPECT_EQ(red::load_prefix<std::vector<Account>>(in), accounts);
  EXPECT_EQ(red::load_prefix<std::vector<double>>(in), std::vector<double>(50000, 0.5));
  EXPECT_EQ(red::load_prefix<Account>(in), Account("tail", -1));
  EXPECT_TRUE(in.empty());
}

TEST(Reduction, FailedDumpLeavesOutputUnchanged) {
  std::string buf = "keep";
  EXPECT_THROW(red::dump_into(buf, std::vector<Thrower>(2)), std::runtime_error);
  EXPECT_EQ(buf, "keep");

  std::variant<int, Bomb> v;
  try {
    v.emplace<1>(Bomb());
  } catch (const std::runtime_error&) {
  }
  if (v.valueless_by_exception()) {
    EXPECT_THROW(red::dump_into(buf, v), mp::ValueError);
    EXPECT_EQ(buf, "keep");
  }
}

// ---------------------------------------------------------------------------------------------
// Type tags.

TEST(Reduction, TypeNames) {
  EXPECT_EQ(red::type_name<int>(), "int");
  EXPECT_EQ(red::type_name<std::vector<int>>(), "std::vector<int>");
  EXPECT_EQ((red::type_name<std::map<std::string, double>>()), "std::map<std::string, double>");
  EXPECT_EQ((red::type_name<std::tuple<int, std::optional<bool>>>()), "std::tuple<int, std::optional<bool>>");
  EXPECT_EQ((red::type_name<std::array<char, 16>>()), "std::array<char, 16>");
  EXPECT_EQ(red::type_name<Point>(), "shapes::Point");
  EXPECT_EQ(red::type_name<std::chrono::milliseconds>(), "std::chrono::duration<long, std::ratio<1, 1000>>");
  EXPECT_NE(red::type_tag<int>(), red::type_tag<unsigned>());
  EXPECT_NE(red::type_tag<std::vector<int>>(), red::type_tag<std::deque<int>>());
  static_assert(red::type_tag<int>() == red::type_tag<const int>());
}

TEST(Reduction, WrongTypeIsATypeErrorNamingBothTypes) {
  const std::string m = red::dumps(std::vector<int>{1, 2});
  try {
    (void)red::loads<std::string>(m);
    FAIL() << "no TypeError";
  } catch (const mp::TypeError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("std::vector<int>"), std::string::npos) << what;
    EXPECT_NE(what.find("std::string"), std::string::npos) << what;
  }
  EXPECT_THROW(red::loads<std::vector<unsigned>>(m), mp::TypeError);
  EXPECT_THROW(red::loads<Person>(red::dumps(Account("a", 1))), mp::TypeError);
  EXPECT_EQ(red::message_type(m), "std::vector<int>");
}

TEST(Reduction, UnknownTagIsNamedInHex) {
  std::string m = red::dumps(1);
  m[3] = static_cast<char>(m[3] ^ 0x5a);  // a tag no type in this process has
  try {
    (void)red::loads<int>(m);
    FAIL() << "no TypeError";
  } catch (const mp::TypeError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("unknown type (tag 0x"), std::string::npos) << what;
    EXPECT_NE(what.find("read as int"), std::string::npos) << what;
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile input.

template <class T>
void expect_every_truncation_fails(const T& value) {
  const std::string m = red::dumps(value);
  for (std::size_t n = 0; n < m.size(); ++n) {
    EXPECT_THROW(red::loads<T>(std::string_view(m.data(), n)), mp::DecodeError)
        << red::type_name<T>() << " truncated to " << n << " of " << m.size() << " bytes";
  }
  EXPECT_NO_THROW(red::loads<T>(m));
}

TEST(Reduction, TruncationAtEveryOffsetIsADecodeError) {
  expect_every_truncation_fails(123);
  expect_every_truncation_fails(std::string("hello world"));
  expect_every_truncation_fails(std::vector<std::string>{"a", "bb", std::string(200, 'c')});
  expect_every_truncation_fails(Person{"Ada", 36, {"m"}, Point{1, 2}, {{"x", 1}}});
  expect_every_truncation_fails(std::map<int, std::optional<std::variant<int, std::string>>>{
      {1, std::nullopt}, {2, 5}, {3, std::string("s")}});
  expect_every_truncation_fails(std::vector<Account>{Account("a", 1), Account(std::string(150, 'z'), 2)});
  expect_every_truncation_fails(std::make_tuple(std::monostate(), Empty{}, std::array<int, 0>{}, true));
}

TEST(Reduction, TrailingBytesAreADecodeError) {
  EXPECT_THROW(red::loads<int>(red::dumps(1) + "x"), mp::DecodeError);
  EXPECT_THROW(red::loads<std::string>(red::dumps(std::string("s")) + '\0'), mp::DecodeError);
  EXPECT_THROW(red::loads<Person>(red::dumps(Person{}) + red::dumps(Person{})), mp::DecodeError);
}

TEST(Reduction, HugeAnnouncedCountsThrowWithoutAllocating) {
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t huge[] = {std::uint64_t{1} << 60, std::numeric_limits<std::uint64_t>::max(),
                                std::uint64_t{1} << 32, 1000};
  for (std::uint64_t n : huge) {
    const std::string count = varint(n) + "abcdefgh";
    EXPECT_THROW(red::loads<std::vector<int>>(header<std::vector<int>>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<std::string>(header<std::string>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<std::vector<std::string>>(header<std::vector<std::string>>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<std::vector<Empty>>(header<std::vector<Empty>>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<std::vector<std::monostate>>(header<std::vector<std::monostate>>() + count), mp::DecodeError);
    EXPECT_THROW((red::loads<std::unordered_map<int, int>>(header<std::unordered_map<int, int>>() + count)), mp::DecodeError);
    EXPECT_THROW(red::loads<std::set<int>>(header<std::set<int>>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<std::vector<bool>>(header<std::vector<bool>>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<std::deque<Person>>(header<std::deque<Person>>() + count), mp::DecodeError);
    EXPECT_THROW(red::loads<Account>(header<Account>() + count), mp::DecodeError);
  }
  // A count that the bytes justify for 1-byte elements but not for 4-byte ones.
  EXPECT_THROW(red::loads<std::vector<int>>(header<std::vector<int>>() + varint(8) + "abcdefgh"), mp::DecodeError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(Reduction, MalformedVarintsAreRejected) {
  const std::string h = header<std::string>();
  EXPECT_THROW(red::loads<std::string>(h + std::string(11, '\xff')), mp::DecodeError);   // too long
  EXPECT_THROW(red::loads<std::string>(h + std::string(9, '\xff') + "\x02"), mp::DecodeError);  // > 64 bits
  EXPECT_THROW(red::loads<std::string>(h + std::string("\x81\x00", 2) + "a"), mp::DecodeError);  // overlong
  EXPECT_THROW(red::loads<std::string>(h + "\x80"), mp::DecodeError);  // truncated
  EXPECT_EQ(red::loads<std::string>(h + "\x01" + "a"), "a");
}

TEST(Reduction, InvalidBitPatternsAreRejected) {
  EXPECT_THROW(red::loads<bool>(header<bool>() + "\x02"), mp::DecodeError);
  EXPECT_THROW(red::loads<Switch>(header<Switch>() + "\x02"), mp::DecodeError);
  static_assert(!dense_v<Switch>);
  EXPECT_THROW(red::loads<Flags>(header<Flags>() + std::string(4, '\0') + "\x07"), mp::DecodeError);
  EXPECT_THROW(red::loads<std::vector<bool>>(header<std::vector<bool>>() + "\x02\x01\x05"), mp::DecodeError);
  EXPECT_THROW(red::loads<std::optional<int>>(header<std::optional<int>>() + "\x02" + "abcd"), mp::DecodeError);
  using V = std::variant<int, std::string>;
  EXPECT_THROW(red::loads<V>(header<V>() + "\x02" + "abcd"), mp::DecodeError);
  EXPECT_THROW(red::loads<std::monostate>(header<std::monostate>() + "\x01"), mp::DecodeError);
  EXPECT_THROW(red::loads<Empty>(header<Empty>() + "\x01"), mp::DecodeError);
  // Duplicate keys cannot come from a real map.
  std::string dup = header<std::map<int, int>>() + varint(2);
  for (int i = 0; i < 2; ++i) dup += std::string("\x01\0\0\0\x02\0\0\0", 8);
  EXPECT_THROW((red::loads<std::map<int, int>>(dup)), mp::DecodeError);
  EXPECT_THROW(red::loads<int>(std::string("\x07") + red::dumps(1).substr(1)), mp::DecodeError);  // version
  EXPECT_THROW(red::loads<int>(""), mp::DecodeError);
  EXPECT_THROW(red::message_type("abc"), mp::DecodeError);
}

TEST(Reduction, NestingDepthIsBounded) {
  auto chain = [](int depth) {
    Tree root;
    Tree* t = &root;
    for (int i = 0; i < depth; ++i) {
      t->v = i;
      t = &t->kids.emplace_back();
    }
    return root;
  };
  Tree back = round_trip(chain(100));
  int depth = 0;
  for (const Tree* t = &back; !t->kids.empty(); t = &t->kids[0]) ++depth;
  EXPECT_EQ(depth, 100);
  std::string keep = "keep";
  EXPECT_THROW(red::dump_into(keep, chain(300)), mp::ValueError);
  EXPECT_EQ(keep, "keep");

  // A hand-made message nesting 3000 trees (each: length, v, one kid) must not recurse 3000
  // deep: the stack of a thread could not take a hostile million.
  std::string body = std::string(4, '\0') + varint(0);
  for (int i = 0; i < 3000; ++i) body = std::string(4, '\0') + varint(1) + varint(body.size()) + body;
  const std::string m = header<Tree>() + varint(body.size()) + body;
  EXPECT_THROW(red::loads<Tree>(m), mp::DecodeError);
}

TEST(Reduction, RandomCorruptionNeverCrashes) {
  using Mixed = std::tuple<std::vector<std::string>, std::map<int, std::optional<Person>>,
                           std::variant<int, std::string, std::vector<Point>>, std::set<long>, Account>;
  Mixed value{{"alpha", "beta", std::string(40, 'g')},
              {{1, Person{"A", 1, {"t"}, Point{1, 1}, {{"s", 1}}}}, {2, std::nullopt}},
              std::vector<Point>{{1, 2}, {3, 4}},
              {5, 6, 7},
              Account("acct", 99)};
  const std::string m = red::dumps(value);
  std::mt19937_64 rng(12345);
  int ok = 0, rejected = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string c = m;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const std::size_t at = 9 + rng() % (c.size() - 9);  // keep the header: reach the payload
      switch (rng() % 3) {
        case 0: c[at] = static_cast<char>(rng()); break;
        case 1: c[at] = static_cast<char>(c[at] ^ (1 << (rng() % 8))); break;
        default: c.insert(c.begin() + static_cast<long>(at), static_cast<char>(0xff)); break;
      }
    }
    (decodes<Mixed>(c) ? ok : rejected)++;
    // The same bytes read as other types.
    (void)decodes<std::vector<std::string>>(c);
    (void)decodes<Person>(c);
  }
  EXPECT_GT(rejected, 0);
  EXPECT_EQ(ok + rejected, 20000);
}

TEST(Reduction, RandomBytesNeverCrash) {
  std::mt19937_64 rng(99);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string c = header<std::map<std::string, std::vector<Flags>>>();
    const std::size_t n = rng() % 48;
    for (std::size_t i = 0; i < n; ++i) c += static_cast<char>(rng() % 4 == 0 ? rng() : rng() % 4);
    (void)decodes<std::map<std::string, std::vector<Flags>>>(c);
  }
  SUCCEED();
}

TEST(Reduction, FailedDecodesLeakNothing) {
  ASSERT_EQ(Counted::live.load(), 0);
  {
    std::vector<Counted> v(5);
    for (int i = 0; i < 5; ++i) v[static_cast<std::size_t>(i)].v = i;
    std::map<int, Counted> m{{1, {}}, {2, {}}};
    std::optional<Counted> o{Counted()};
    std::variant<int, Counted> var{Counted()};
    std::list<std::pair<Counted, Counted>> l(2);
    const std::string msgs[] = {red::dumps(v), red::dumps(m), red::dumps(o), red::dumps(var), red::dumps(l)};
    const long live_before = Counted::live.load();
    for (const std::string& msg : msgs) {
      for (std::size_t n = 0; n < msg.size(); ++n) {
        std::string_view cut(msg.data(), n);
        (void)decodes<std::vector<Counted>>(cut);
        (void)decodes<std::map<int, Counted>>(cut);
        (void)decodes<std::optional<Counted>>(cut);
        (void)decodes<std::variant<int, Counted>>(cut);
        (void)decodes<std::list<std::pair<Counted, Counted>>>(cut);
        ASSERT_EQ(Counted::live.load(), live_before) << "after a decode of " << n << " bytes";
      }
    }
    auto back = red::loads<std::vector<Counted>>(msgs[0]);
    ASSERT_EQ(back.size(), 5u);
    EXPECT_EQ(back[4].v, 4);
  }
  EXPECT_EQ(Counted::live.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// The extension point.

TEST(Reduction, ReduceTypeCarriesDescriptorsOutOfBand) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  std::vector<FdBox> sent;
  sent.emplace_back(p[0], "read end");
  sent.emplace_back(p[1], "write end");
  std::string msg;
  std::vector<int> fds{-7};  // an earlier message's descriptor: indices are per message
  red::dump_into(msg, sent, fds);
  ASSERT_EQ(fds.size(), 3u);
  EXPECT_EQ(fds[1], p[0]);
  EXPECT_EQ(fds[2], p[1]);

  // What a transport does: the receiver gets its own copies of the descriptors.
  std::vector<int> received{::fcntl(fds[1], F_DUPFD_CLOEXEC, 0), ::fcntl(fds[2], F_DUPFD_CLOEXEC, 0)};
  auto boxes = red::loads<std::vector<FdBox>>(msg, received);
  ASSERT_EQ(boxes.size(), 2u);
  EXPECT_EQ(boxes[0].tag(), "read end");
  EXPECT_EQ(boxes[1].tag(), "write end");
  EXPECT_EQ(received[0], -1);  // taken: now owned by the boxes
  EXPECT_EQ(received[1], -1);
  ASSERT_EQ(::write(boxes[1].fd(), "k", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(sent[0].fd(), &c, 1), 1);
  EXPECT_EQ(c, 'k');
}

TEST(Reduction, ReduceTypeWithoutDescriptorListIsRefused) {
  const int fd = ::fcntl(0, F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  FdBox box(fd, "stdin");
  EXPECT_THROW(red::dumps(box), mp::TypeError);
  std::string buf = "keep";
  EXPECT_THROW(red::dump_into(buf, box), mp::TypeError);
  EXPECT_EQ(buf, "keep");

  // Decoding without the descriptors a message names is a DecodeError.
  std::string msg;
  std::vector<int> fds;
  red::dump_into(msg, box, fds);
  EXPECT_THROW(red::loads<FdBox>(msg), mp::DecodeError);
  // Only one of two descriptors arrived: the first box takes (and on failure closes) it.
  std::string two;
  std::vector<int> fds2;
  std::vector<FdBox> pair_of;
  pair_of.emplace_back(::fcntl(0, F_DUPFD_CLOEXEC, 0), "a");
  pair_of.emplace_back(::fcntl(0, F_DUPFD_CLOEXEC, 0), "b");
  red::dump_into(two, pair_of, fds2);
  std::vector<int> got{::fcntl(0, F_DUPFD_CLOEXEC, 0)};
  EXPECT_THROW(red::loads<std::vector<FdBox>>(two, got), mp::DecodeError);
  EXPECT_EQ(got[0], -1);
  // An index cannot be taken twice.
  mp::detail::Reader r(std::string_view(), got);
  EXPECT_THROW(r.take_fd(0), mp::DecodeError);
}

TEST(Reduction, ReduceTypesWithoutDefaultConstructorNest) {
  std::vector<Token> v{Token(1), Token(2)};
  auto back = round_trip(v);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].value(), 2);
  auto o = round_trip(std::optional<Token>(Token(9)));
  ASSERT_TRUE(o);
  EXPECT_EQ(o->value(), 9);
  auto m = round_trip(std::map<int, Token>{{1, Token(3)}});
  EXPECT_EQ(m.at(1).value(), 3);
  auto var = round_trip(std::variant<int, Token>(Token(4)));
  EXPECT_EQ(std::get<Token>(var).value(), 4);
}

// ---------------------------------------------------------------------------------------------
// Across a real process boundary.

class ReductionProcess : public mptest::Test {};

TEST_P(ReductionProcess, MessageFromAChildDecodesInTheParent) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  const int status = mptest::raw_fork_wait([&] {
    ::close(p[0]);
    std::string m = red::dumps(Person{"child", static_cast<int>(::getpid() % 1000), {"x"}, Point{3, 4}, {}});
    const bool ok = ::write(p[1], m.data(), m.size()) == static_cast<ssize_t>(m.size());
    ::close(p[1]);
    return ok ? 0 : 1;
  });
  ::close(p[1]);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  Person back = red::loads<Person>(got);
  EXPECT_EQ(back.name, "child");
  EXPECT_EQ(back.home, (Point{3, 4}));
  EXPECT_THROW(red::loads<Account>(got), mp::TypeError);
}

MP_INSTANTIATE(ReductionProcess);
