// shared_memory.cpp: SharedMemory, named POSIX shared memory (Python:
// multiprocessing/shared_memory.py).
#include "multiprocessing/shared_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <utility>

#include "multiprocessing/detail/codec.hpp"
#include "sys.hpp"

namespace multiprocessing::shared_memory {

namespace {

// Python: "psm_" + secrets.token_hex(); 64 random bits here.
std::string random_name() {
  unsigned char bytes[8];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t r = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      detail::sys::throw_errno("getrandom", "shared memory name");
    }
    got += static_cast<size_t>(r);
  }
  std::string name = "/psm_";
  char hex[3];
  for (unsigned char b : bytes) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    name += hex;
  }
  return name;
}

std::string with_slash(std::string_view name) {
  if (name.empty() || name == "/") throw ValueError("shared memory name must not be empty");
  std::string out;
  if (name.front() != '/') out += '/';
  out += name;
  return out;
}

}  // namespace

SharedMemory::SharedMemory(create_t, std::size_t size, CreateOptions options) {
  create_segment(size, std::move(options.name), options.track);
}

SharedMemory::SharedMemory(create_t, std::size_t size, std::string_view name) {
  create_segment(size, std::string(name), true);
}

void SharedMemory::create_segment(std::size_t size, std::string name, bool track) {
  if (size == 0) throw ValueError("shared memory size must be a positive number of bytes, not 0");
  if (size > static_cast<std::size_t>(std::numeric_limits<off_t>::max()))
    throw ValueError("shared memory size " + std::to_string(size) + " is too large");
  // The tracker must exist before the segment does: a crash in between would leak it.
  if (track) detail::resource_tracker::ensure_running();
  const bool chosen = name.empty();
  for (int attempt = 0;; ++attempt) {
    name_ = chosen ? random_name() : with_slash(name);
    // glibc's shm_open adds O_CLOEXEC | O_NOFOLLOW.
    int fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0) {
      fd_.reset(fd);
      break;
    }
    if (errno == EEXIST && chosen && attempt < 100) continue;
    detail::sys::throw_errno("shm_open", name_);
  }
  // From here on the name is ours: undo it on failure.
  if (detail::sys::retry([&] { return ::ftruncate(fd_.get(), static_cast<off_t>(size)); }) != 0) {
    int e = errno;
    ::shm_unlink(name_.c_str());
    detail::sys::throw_errno(e, "ftruncate", name_);
  }
  try {
    map(size);
  } catch (...) {
    ::shm_unlink(name_.c_str());
    throw;
  }
  if (track) {
    try {
      detail::resource_tracker::register_segment(name_);
    } catch (...) {
      close();
      ::shm_unlink(name_.c_str());
      throw;
    }
  }
}

SharedMemory::SharedMemory(std::string_view name) {
  name_ = with_slash(name);
  int fd = ::shm_open(name_.c_str(), O_RDWR, 0);
  if (fd < 0) detail::sys::throw_errno("shm_open", name_);
  fd_.reset(fd);
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) detail::sys::throw_errno("fstat", name_);
  if (st.st_size <= 0) throw ValueError("shared memory segment " + name_ + " is empty");
  map(static_cast<std::size_t>(st.st_size));
}

void SharedMemory::map(std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) detail::sys::throw_errno("mmap", name_);
  data_ = p;
  size_ = size;
}

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : name_(std::move(other.name_)),
      fd_(std::move(other.fd_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {
  other.name_.clear();
}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    close();
    name_ = std::move(other.name_);
    other.name_.clear();
    fd_ = std::move(other.fd_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SharedMemory::~SharedMemory() { close(); }

std::span<std::byte> SharedMemory::buf() const {
  if (data_ == nullptr) throw std::logic_error("SharedMemory::buf: the segment " + name_ + " is closed");
  return {static_cast<std::byte*>(data_), size_};
}

std::string SharedMemory::name() const { return name_.empty() ? name_ : name_.substr(1); }

void SharedMemory::close() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  fd_.reset();
}

void SharedMemory::unlink() {
  if (name_.empty()) throw std::logic_error("SharedMemory::unlink: moved-from object has no segment");
  if (::shm_unlink(name_.c_str()) != 0) detail::sys::throw_errno("shm_unlink", name_);
  detail::resource_tracker::unregister_segment(name_);
}

void SharedMemory::mp_reduce(detail::Writer& w) const {
  if (name_.empty()) throw std::logic_error("SharedMemory: a moved-from object cannot be sent");
  w.write(name_);
}

SharedMemory SharedMemory::mp_rebuild(detail::Reader& r) {
  auto name = r.read<std::string>();
  if (name.size() < 2 || name.front() != '/') r.fail("not a shared memory segment name");
  return SharedMemory(name);
}

}  // namespace multiprocessing::shared_memory
