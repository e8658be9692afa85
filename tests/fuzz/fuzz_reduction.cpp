// fuzz_reduction.cpp: libFuzzer target for the codec (Python: pickle's unpickler hardening).
// Decodes each input as several types; a decode may succeed or throw mp::DecodeError /
// mp::TypeError, nothing else (no crash, sanitizer report, leak, hang or huge allocation).
// Inputs whose first byte selects a type get that type's header prepended, so the fuzzer
// spends its time in the payload decoders; canonical types must re-encode to the same bytes.
// Built with clang++ by tests/fuzz.cmake; with -DMP_FUZZ_WRITE_SEEDS it is instead a program
// that writes a seed corpus (see docs/fuzzing.md).
#include <multiprocessing/reduction.hpp>

#include <cereal/cereal.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace mp = multiprocessing;
namespace red = mp::reduction;

namespace fz {

struct Point {
  int x = 0, y = 0;
};
enum class Color : std::uint8_t { red, green, blue };
enum class Switch : bool { off, on };  // only 0/1 valid
struct Flags {
  int n = 0;
  bool on = false;
};
struct Record {  // an aggregate: string, dense vector, optional, enum, nested aggregate
  std::string name;
  int id = 0;
  std::vector<Point> path;
  std::optional<Flags> flags;
  Color color = Color::red;
};
struct Empty {};
class Account {  // a cereal class
 public:
  std::string owner;
  long cents = 0;
  std::vector<std::string> notes;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(owner, cents, notes);
  }
};
struct Blob {  // cereal size tag + binary data: a user-driven resize
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
struct Handle {  // mp_reduce with an out-of-band descriptor index (never a real fd here)
  int fd = -1;
  std::string what;
  void mp_reduce(mp::detail::Writer& w) const {
    w.write_varint(w.add_fd(fd));
    w.write(what);
  }
  static Handle mp_rebuild(mp::detail::Reader& r) {
    Handle h;
    h.fd = r.take_fd(static_cast<std::size_t>(r.read_varint()));
    h.what = r.read<std::string>();
    return h;
  }
};

using T0 = std::vector<std::string>;
using T1 = std::map<std::string, std::vector<int>>;
using T2 = std::variant<std::monostate, int, std::string, std::vector<double>>;
using T3 = std::optional<std::tuple<int, bool, std::string>>;
using T4 = Record;
using T5 = Account;
using T6 = std::set<long>;
using T7 = std::unordered_map<std::string, std::deque<bool>>;
using T8 = std::tuple<std::vector<bool>, std::list<std::u16string>, std::array<short, 3>>;
using T9 = std::tuple<std::monostate, Empty, std::array<int, 0>, std::chrono::milliseconds, long double, Switch>;
using T10 = std::vector<Handle>;
using T11 = std::pair<Blob, std::multimap<int, std::optional<Record>>>;
inline constexpr int kTypes = 12;

[[noreturn]] void die(const char* why) {
  std::fprintf(stderr, "fuzz_reduction: %s\n", why);
  std::abort();
}

// Decodes as T. `canonical`: the encoding of a T is unique, so a successful decode must
// re-encode to exactly the input.
template <class T, bool canonical>
void try_type(std::string_view msg) {
  int fds_storage[4] = {100, 101, 102, 103};
  try {
    T v = red::loads<T>(msg, std::span<int>(fds_storage));
    std::string again;
    std::vector<int> fds;
    red::dump_into(again, v, fds);
    if constexpr (canonical) {
      if (again != msg) die("a decoded value re-encoded to different bytes");
    }
    // Whatever decoded must decode again as the same thing.
    int fds2[4] = {100, 101, 102, 103};
    (void)red::loads<T>(again, std::span<int>(fds2));
  } catch (const mp::DecodeError&) {
  } catch (const mp::TypeError&) {
  }
}

template <class T, bool canonical>
void with_header(std::string_view payload) {
  std::string msg = red::dumps(T{}).substr(0, 9);
  msg.append(payload);
  try_type<T, canonical>(msg);
}

void one_input(std::string_view in) {
  // Raw: header checks, then every type against the same bytes.
  try_type<T0, true>(in);
  try_type<T4, true>(in);
  try_type<T6, false>(in);
  if (in.empty()) return;
  const std::string_view payload = in.substr(1);
  switch (static_cast<unsigned char>(in[0]) % kTypes) {
    case 0: with_header<T0, true>(payload); break;
    case 1: with_header<T1, false>(payload); break;  // keys may come unsorted
    case 2: with_header<T2, true>(payload); break;
    case 3: with_header<T3, true>(payload); break;
    case 4: with_header<T4, true>(payload); break;
    case 5: with_header<T5, true>(payload); break;
    case 6: with_header<T6, false>(payload); break;
    case 7: with_header<T7, false>(payload); break;
    case 8: with_header<T8, true>(payload); break;
    case 9: with_header<T9, false>(payload); break;  // long double keeps 10 of 16 bytes
    case 10: with_header<T10, false>(payload); break;  // descriptor indices are renumbered
    case 11: with_header<T11, false>(payload); break;
  }
}

}  // namespace fz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fz::one_input(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}

#ifdef MP_FUZZ_WRITE_SEEDS
// Writes one seed per type: the selector byte followed by a real message's payload.
namespace fz {
template <class T>
void write_seed(const std::string& dir, int selector, const T& value, int n) {
  std::string msg;
  std::vector<int> fds;
  red::dump_into(msg, value, fds);
  std::string seed(1, static_cast<char>(selector));
  seed += msg.substr(9);
  const std::string path = dir + "/seed_" + std::to_string(selector) + "_" + std::to_string(n);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) die("cannot write a seed");
  std::fwrite(seed.data(), 1, seed.size(), f);
  std::fclose(f);
  // The whole message too, for the raw decoders.
  FILE* g = std::fopen((path + "_raw").c_str(), "wb");
  if (!g) die("cannot write a seed");
  std::fwrite(msg.data(), 1, msg.size(), g);
  std::fclose(g);
}
}  // namespace fz

int main(int argc, char** argv) {
  using namespace fz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SEED_DIR\n", argv[0]);
    return 2;
  }
  const std::string d = argv[1];
  write_seed(d, 0, T0{"alpha", "", std::string(40, 'b')}, 0);
  write_seed(d, 1, T1{{"k", {1, 2, 3}}, {"z", {}}}, 0);
  write_seed(d, 2, T2{std::string("str")}, 0);
  write_seed(d, 2, T2{std::vector<double>{1.5, -2}}, 1);
  write_seed(d, 3, T3{std::make_tuple(7, true, std::string("x"))}, 0);
  write_seed(d, 4, T4{"rec", 3, {{1, 2}, {3, 4}}, Flags{5, true}, Color::blue}, 0);
  write_seed(d, 5, T5{"owner", 99, {"n1", std::string(200, 'n')}}, 0);
  write_seed(d, 6, T6{1, 5, 9}, 0);
  write_seed(d, 7, T7{{"a", {true, false}}}, 0);
  write_seed(d, 8, T8{{true, false, true}, {u"x", u"yz"}, {1, 2, 3}}, 0);
  write_seed(d, 9, T9{{}, {}, {}, std::chrono::milliseconds(5), 1.25L, Switch::on}, 0);
  write_seed(d, 10, T10{Handle{3, "q"}, Handle{4, "lock"}}, 0);
  Blob b;
  b.words = {1, 2, 3};
  write_seed(d, 11, T11{b, {{1, std::nullopt}, {2, Record{"r", 1, {}, std::nullopt, Color::green}}}}, 0);
  return 0;
}
#endif
