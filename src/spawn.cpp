// spawn.cpp: what spawn and forkserver children share: naming code across processes (an
// offset inside its loaded image), the boot message a child receives, and the bootstrap
// that mp::init runs in such a child (Python: spawn.py).
#include "spawn_internal.hpp"

#include <link.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "multiprocessing/shared_memory.hpp"
#include "process_internal.hpp"
#include "sys.hpp"

extern char** environ;

namespace multiprocessing::detail {

// --- code addresses ---------------------------------------------------------------------

namespace {

struct Lookup {
  std::uintptr_t addr = 0;          // in: the address to find (encode)
  const std::string* name = nullptr;  // in: the object to find (decode)
  bool first = true;
  bool found = false;
  std::string object;               // out
  std::uintptr_t base = 0;          // out: the object's load bias
  std::uintptr_t lo = 0, hi = 0;    // out: its executable segment containing addr / all of them
};

int find_object(dl_phdr_info* info, size_t, void* data) {
  auto* l = static_cast<Lookup*>(data);
  // The first object dl_iterate_phdr reports is the main program; name it "".
  std::string name = l->first ? std::string() : std::string(info->dlpi_name ? info->dlpi_name : "");
  l->first = false;
  if (l->name && name != *l->name) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
    if (l->name || (l->addr >= lo && l->addr < hi)) {
      l->found = true;
      l->object = name;
      l->base = info->dlpi_addr;
      if (l->name) {
        // Decoding: remember the executable range that will contain the address.
        std::uintptr_t a = info->dlpi_addr + l->addr;
        if (a >= lo && a < hi) {
          l->lo = lo;
          l->hi = hi;
          return 1;
        }
        continue;
      }
      return 1;
    }
  }
  return l->name && l->found ? 1 : 0;
}

// The main program's executable segments, found once: most targets live there, and a
// forkserver child then names its target without walking the loaded objects (each code page
// a fork child touches first is a page fault).
struct MainProgram {
  std::uintptr_t base = 0;
  std::uintptr_t lo[4] = {}, hi[4] = {};
  int segments = 0;
};

const MainProgram& main_program() {
  static const MainProgram m = [] {
    MainProgram r;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) {
          auto* r = static_cast<MainProgram*>(data);
          r->base = info->dlpi_addr;
          for (int i = 0; i < info->dlpi_phnum && r->segments < 4; ++i) {
            const auto& ph = info->dlpi_phdr[i];
            if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
            r->lo[r->segments] = info->dlpi_addr + ph.p_vaddr;
            r->hi[r->segments++] = info->dlpi_addr + ph.p_vaddr + ph.p_memsz;
          }
          return 1;  // the first object reported is the main program
        },
        &r);
    return r;
  }();
  return m;
}

bool in_main_program(std::uintptr_t a) {
  const MainProgram& m = main_program();
  for (int i = 0; i < m.segments; ++i)
    if (a >= m.lo[i] && a < m.hi[i]) return true;
  return false;
}

}  // namespace

void warm_code_address_cache() { (void)main_program(); }

CodeAddress encode_code_address(void* p) {
  if (in_main_program(reinterpret_cast<std::uintptr_t>(p)))
    return CodeAddress{std::string(), reinterpret_cast<std::uintptr_t>(p) - main_program().base};
  Lookup l;
  l.addr = reinterpret_cast<std::uintptr_t>(p);
  dl_iterate_phdr(find_object, &l);
  if (!l.found) throw ProcessError("multiprocessing: the target's code is in no loaded object");
  return CodeAddress{l.object, static_cast<std::uint64_t>(l.addr - l.base)};
}

void* decode_code_address(const CodeAddress& c) {
  if (c.object.empty() && in_main_program(main_program().base + c.offset))
    return reinterpret_cast<void*>(main_program().base + c.offset);
  Lookup l;
  l.name = &c.object;
  l.addr = static_cast<std::uintptr_t>(c.offset);
  dl_iterate_phdr(find_object, &l);
  if (!l.found || l.hi == 0)
    throw ProcessError("multiprocessing: spawned child cannot find the target's code (object '" +
                       c.object + "', offset " + std::to_string(c.offset) +
                       "): parent and child must run the same binary");
  return reinterpret_cast<void*>(l.base + c.offset);
}

// --- boot messages ------------------------------------------------------------------------

std::uint64_t environment_hash() noexcept {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the entries, NUL-separated
  for (char** e = environ; e && *e; ++e) {
    for (const char* c = *e; *c; ++c) h = (h ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;
  }
  return h;
}

BootMessage make_boot_message(const std::string& name, bool daemon, std::vector<int> identity,
                              StartMethod method, const SpawnCall& call) {
  BootMessage b;
  b.name = name;
  b.daemon = daemon;
  b.parent_pid = ::getpid();
  b.parent_name = current_process().name();
  b.identity = std::move(identity);
  b.method = static_cast<std::int32_t>(method);
  b.trampoline = encode_code_address(reinterpret_cast<void*>(call.trampoline));
  b.fn = encode_code_address(call.fn);
  b.args = call.args;
  b.nfds = static_cast<std::uint32_t>(call.fds.size());
  return b;
}

void send_boot_message(int fd, const BootMessage& boot_in, std::vector<int> fds,
                       const Deadline& deadline) {
  // The child joins this tree's resource tracker, so that the segments it creates are
  // removed when the tree ends.
  BootMessage boot = boot_in;
  int tracker = resource_tracker::fd();
  boot.with_tracker = tracker >= 0;
  if (boot.with_tracker) fds.push_back(tracker);
  std::string body;
  std::uint64_t len = 0;
  body.append(reinterpret_cast<const char*>(&len), sizeof len);
  reduction::dump_into(body, boot);
  len = body.size() - sizeof len;
  std::memcpy(body.data(), &len, sizeof len);
  if (fds.size() > kMaxBootFds)
    throw ProcessError("multiprocessing: a spawned child can receive at most " +
                       std::to_string(kMaxBootFds) + " descriptors, not " + std::to_string(fds.size()));
  size_t off = 0;
  bool fds_sent = fds.empty();
  while (off < body.size()) {
    if (!sys::poll_one(fd, POLLOUT, deadline))
      throw ProcessError("multiprocessing: timed out sending the child its target");
    iovec iov{body.data() + off, body.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxBootFds)];
    if (!fds_sent) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sys::retry([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (n < 0) {
      if (errno == EAGAIN) continue;
      if (errno == EPIPE || errno == ECONNRESET)
        throw ProcessError("multiprocessing: the child died before it received its target");
      sys::throw_errno("sendmsg", "boot message");
    }
    fds_sent = true;
    off += static_cast<size_t>(n);
  }
}

namespace {

// Reads the boot message; fills `fds` with the descriptors that came with it.
std::string receive_boot_message(int fd, std::vector<int>& fds) {
  std::uint64_t len = 0;
  char* dst = reinterpret_cast<char*>(&len);
  size_t got = 0;
  while (got < sizeof len) {
    iovec iov{dst + got, sizeof len - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxBootFds)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = sys::retry([&] { return ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
    if (n < 0) sys::throw_errno("recvmsg", "boot message");
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
        fds.insert(fds.end(), p, p + k);
      }
    }
    if (n == 0) throw EOFError("multiprocessing: the parent closed the boot channel");
    got += static_cast<size_t>(n);
  }
  if (len > (std::uint64_t{1} << 40)) throw DecodeError("multiprocessing: absurd boot message length");
  std::string body;
  // Grow with the bytes that really arrive, never to an announced size up front.
  while (body.size() < len) {
    size_t chunk = std::min<std::uint64_t>(len - body.size(), 1 << 20);
    size_t old = body.size();
    body.resize(old + chunk);
    if (sys::read_full(fd, body.data() + old, chunk, "boot message") != chunk)
      throw EOFError("multiprocessing: the boot message was cut short");
  }
  return body;
}

void write_ack(int fd, char kind, const std::string& text) {
  std::string msg(1, kind);
  msg += text;
  ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
}

}  // namespace

[[noreturn]] void run_boot(int boot_fd) {
  std::vector<int> fds;
  BootMessage boot;
  SpawnCall::Trampoline trampoline = nullptr;
  void* fn = nullptr;
  try {
    std::string body = receive_boot_message(boot_fd, fds);
    boot = reduction::loads<BootMessage>(body);
    if (boot.with_tracker && fds.size() == boot.nfds + 1) {
      resource_tracker::adopt(UniqueFd(fds.back()));
      fds.pop_back();
    }
    if (boot.nfds != fds.size())
      throw DecodeError("multiprocessing: boot message announced " + std::to_string(boot.nfds) +
                        " descriptors, " + std::to_string(fds.size()) + " arrived");
    trampoline = reinterpret_cast<SpawnCall::Trampoline>(decode_code_address(boot.trampoline));
    fn = decode_code_address(boot.fn);
    ChildIdentity id;
    id.identity = std::make_unique<Identity>();
    id.registry = std::make_unique<Registry>();
    id.identity->name = boot.name;
    id.identity->identity = boot.identity;
    id.identity->daemon = boot.daemon;
    id.identity->parent.emplace(boot.parent_pid, boot.parent_name);
    become_child(id);
    if (!boot.cwd.empty() && ::chdir(boot.cwd.c_str()) != 0) {
      // The parent's directory is gone or closed to us: stay where the server is, as a
      // Python forkserver child would.
    }
    if (boot.set_environment) {
      ::clearenv();
      for (const std::string& kv : boot.environment) ::putenv(::strdup(kv.c_str()));
    }
    if (boot.daemon && static_cast<StartMethod>(boot.method) == StartMethod::spawn) {
      // Die with the parent, SIGKILL included; re-check in case it died before prctl.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != boot.parent_pid) ::_exit(1);
    }
  } catch (const std::exception& e) {
    write_ack(boot_fd, 'E', e.what());
    std::fprintf(stderr, "multiprocessing: bootstrap of a spawned process failed: %s\n", e.what());
    ::_exit(1);
  }
  write_ack(boot_fd, 'A', {});
  ::close(boot_fd);
  int code = 0;
  try {
    code = trampoline(fn, boot.args, fds);
  } catch (...) {
    report_uncaught(boot.name);
    code = 1;
  }
  for (int fd : fds)
    if (fd >= 0) ::close(fd);
  exit_child(code);
}

void wait_boot_ack(int boot_fd, int child_ended_fd, const std::string& name, const Deadline& deadline,
                   const std::function<std::string()>& describe_exit) {
  for (;;) {
    pollfd p[2] = {{boot_fd, POLLIN, 0}, {child_ended_fd, POLLIN, 0}};
    int r = ::poll(p, child_ended_fd >= 0 ? 2 : 1, deadline.poll_timeout_ms());
    if (r < 0) {
      if (errno == EINTR) continue;
      sys::throw_errno("poll", "boot acknowledgement");
    }
    if (r == 0 && deadline.expired())
      throw ProcessError("Process " + name + ": the child did not start its target in time");
    if (p[0].revents) {
      char buf[4096];
      ssize_t n = sys::retry([&] { return ::recv(boot_fd, buf, sizeof buf, 0); });
      if (n > 0 && buf[0] == 'A') return;
      if (n > 0 && buf[0] == 'E')
        throw ProcessError("Process " + name + ": bootstrap failed in the child: " +
                           std::string(buf + 1, static_cast<size_t>(n - 1)));
      throw ProcessError("Process " + name + ": the child ended before it started its target (" +
                         describe_exit() + "); did its main() call mp::init(argc, argv) first?");
    }
    if (child_ended_fd >= 0 && p[1].revents)
      throw ProcessError("Process " + name + ": the child ended before it started its target (" +
                         describe_exit() + ")");
  }
}

}  // namespace multiprocessing::detail
