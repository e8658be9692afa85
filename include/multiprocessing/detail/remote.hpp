// detail/remote.hpp: naming code and exceptions across processes that run the same binary
// (spawn and forkserver children, pool workers, MPI ranks). Not for users.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <exception>
#include <string>

namespace multiprocessing::detail {

/// A code address as an offset into the loaded object that holds it ("" for the main
/// program), so that it means the same in another process of the same binary despite ASLR.
struct CodeAddress {
  std::string object;
  std::uint64_t offset = 0;
};
/// Throws mp::ProcessError when `p` is in no loaded object.
CodeAddress encode_code_address(void* p);
/// Throws mp::ProcessError when the object is not loaded or the offset is not code.
void* decode_code_address(const CodeAddress& c);

/// The demangled form of a type name from typeid(...).name().
std::string demangle(const char* mangled);
/// An exception that crossed from another process as its type name and message: the standard
/// exception types come back as themselves, anything else as mp::RemoteError naming the type,
/// the message and the pid it came from.
std::exception_ptr rebuild_remote_exception(const std::string& type, const std::string& what, pid_t pid);

}  // namespace multiprocessing::detail
