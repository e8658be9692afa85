// bench_reduction.cpp: the codec's speed (Python: reduction.py / pickle) against cereal's
// BinaryOutputArchive/BinaryInputArchive alone and Python's pickle, on the same data in the
// same run. Each figure is an encode + decode round trip (median of several batches):
//   *_vecstr_roundtrip     std::vector<std::string>, 1000 strings of 16-32 chars (us)
//   *_record_roundtrip     an aggregate {int a, b, c; double d; std::string s} (ns)
//   *_int_roundtrip        one int: dumps + loads of a whole message (ns)
//   *_vecdouble_roundtrip  std::vector<double> of 1,000,000 (GB/s of payload)
// plus ratios (x): how many times slower cereal and pickle are than this codec.
#include <cereal/archives/binary.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <multiprocessing/reduction.hpp>

#include "bench_util.hpp"

namespace mp = multiprocessing;
namespace red = mp::reduction;

namespace benchdata {
struct Record {  // an aggregate: crosses with no boilerplate
  int a = 0, b = 0, c = 0;
  double d = 0;
  std::string s;
};
// cereal needs a serialize(); these overloads name cereal's archives only, so the codec
// still takes the aggregate (Boost.PFR) path for Record.
void serialize(cereal::BinaryOutputArchive& ar, Record& r) { ar(r.a, r.b, r.c, r.d, r.s); }
void serialize(cereal::BinaryInputArchive& ar, Record& r) { ar(r.a, r.b, r.c, r.d, r.s); }
}  // namespace benchdata
using benchdata::Record;

namespace {

volatile std::size_t g_sink;  // keeps results alive

// Median seconds per operation of `n` calls of f, over `reps` batches.
template <class F>
double per_op(int reps, long n, F&& f) {
  return bench::median_seconds(reps, [&] {
           for (long i = 0; i < n; ++i) f();
         }) /
         static_cast<double>(n);
}

template <class T>
double mp_roundtrip(const T& v, long n) {
  std::string buf;
  return per_op(7, n, [&] {
    buf.clear();
    red::dump_into(buf, v);
    asm volatile("" : : "r"(buf.data()) : "memory");
    T back = red::loads<T>(buf);
    g_sink = g_sink + sizeof(back);
  });
}

template <class T>
double cereal_roundtrip(const T& v, long n) {
  std::stringstream ss;
  return per_op(7, n, [&] {
    ss.str(std::string());
    ss.clear();
    {
      cereal::BinaryOutputArchive out(ss);
      out(v);
    }
    T back;
    {
      cereal::BinaryInputArchive in(ss);
      in(back);
    }
    g_sink = g_sink + sizeof(back);
  });
}

void ratio(const std::string& name, double slower, double ours) { bench::report(name, slower / ours, "x"); }

}  // namespace

int main() {
  std::mt19937 rng(42);
  std::vector<std::string> strings;
  for (int i = 0; i < 1000; ++i) {
    std::string s(16 + rng() % 17, ' ');
    for (char& c : s) c = static_cast<char>('a' + rng() % 26);
    strings.push_back(std::move(s));
  }
  const Record rec{1, 2, 3, 4.5, "a short string"};
  std::vector<double> dense(1000000);
  for (std::size_t i = 0; i < dense.size(); ++i) dense[i] = static_cast<double>(i) * 0.5;

  const auto py = bench::run_python("py_reduction.py");

  const double mp_vs = mp_roundtrip(strings, 3000);
  const double ce_vs = cereal_roundtrip(strings, 3000);
  const double py_vs = bench::get(py, "pickle_vecstr_roundtrip") * 1e-6;
  bench::report("mp_vecstr_roundtrip", mp_vs * 1e6, "us");
  bench::report("cereal_vecstr_roundtrip", ce_vs * 1e6, "us");
  bench::report("pickle_vecstr_roundtrip", py_vs * 1e6, "us");
  ratio("vecstr_cereal_over_mp", ce_vs, mp_vs);
  ratio("vecstr_pickle_over_mp", py_vs, mp_vs);

  const double mp_rec = mp_roundtrip(rec, 1000000);
  const double ce_rec = cereal_roundtrip(rec, 1000000);
  const double py_rec = bench::get(py, "pickle_record_roundtrip") * 1e-9;
  bench::report("mp_record_roundtrip", mp_rec * 1e9, "ns");
  bench::report("cereal_record_roundtrip", ce_rec * 1e9, "ns");
  bench::report("pickle_record_roundtrip", py_rec * 1e9, "ns");
  ratio("record_cereal_over_mp", ce_rec, mp_rec);
  ratio("record_pickle_over_mp", py_rec, mp_rec);

  volatile int input = 12345;  // opaque to the optimiser
  const double mp_int = per_op(7, 5000000, [&] {
    std::string m = red::dumps(static_cast<int>(input));
    asm volatile("" : : "r"(m.data()) : "memory");  // the message must really exist
    g_sink = g_sink + static_cast<std::size_t>(red::loads<int>(m));
  });
  const double ce_int = cereal_roundtrip(12345, 1000000);
  const double py_int = bench::get(py, "pickle_int_roundtrip") * 1e-9;
  bench::report("mp_int_roundtrip", mp_int * 1e9, "ns");
  bench::report("cereal_int_roundtrip", ce_int * 1e9, "ns");
  bench::report("pickle_int_roundtrip", py_int * 1e9, "ns");
  ratio("int_cereal_over_mp", ce_int, mp_int);
  ratio("int_pickle_over_mp", py_int, mp_int);

  const double bytes = static_cast<double>(dense.size() * sizeof(double));
  const double mp_vd = mp_roundtrip(dense, 20);
  const double ce_vd = cereal_roundtrip(dense, 20);
  const double py_vd_gbs = bench::get(py, "pickle_vecdouble_roundtrip");
  bench::report("mp_vecdouble_roundtrip", bytes / mp_vd / 1e9, "GB/s");
  bench::report("cereal_vecdouble_roundtrip", bytes / ce_vd / 1e9, "GB/s");
  bench::report("pickle_vecdouble_roundtrip", py_vd_gbs, "GB/s");
  ratio("vecdouble_cereal_over_mp", ce_vd, mp_vd);
  ratio("vecdouble_pickle_over_mp", bytes / py_vd_gbs / 1e9, mp_vd);
  return 0;
}
