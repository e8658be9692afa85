// Must NOT compile: a forkserver context known at compile time refuses an argument the codec
// cannot serialize (tests/context.cmake checks the static_assert's text).
#include <multiprocessing.hpp>
namespace mp = multiprocessing;

struct Opaque {
  Opaque() = default;
  Opaque(const Opaque&) = delete;
  Opaque(Opaque&&) = default;
  int* p = nullptr;
};
void use(Opaque) {}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto ctx = mp::get_context<mp::StartMethod::forkserver>();
  auto p = ctx.Process(&use, Opaque{});
  p.start();
  p.join();
}
