// errors.hpp: the exception family of the library (Python: multiprocessing/context.py).
//
// Every library error derives from mp::ProcessError (a std::runtime_error), except where a
// standard type fits better: operating-system failures are std::system_error carrying the
// errno and naming the call, and misuse (start twice, join before start) is std::logic_error.
#pragma once

#include <stdexcept>
#include <string>
#include <sys/types.h>

namespace multiprocessing {

/// Base of every library error (Python: multiprocessing.ProcessError).
class ProcessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A timed operation ran out of time where the API reports it by exception
/// (Python: multiprocessing.TimeoutError). Most timed forms return false/nullopt instead.
class TimeoutError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// The authkey handshake failed: a wrong key, or a peer that does not speak the protocol
/// (Python: multiprocessing.AuthenticationError).
class AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// A message did not fit the buffer it was read into (Python: multiprocessing.BufferTooShort).
class BufferTooShort : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// The other end of a connection is closed: nothing more will arrive (Python: EOFError).
class EOFError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// A value was read as a type it was not written as, or a type cannot cross a process
/// boundary (Python: TypeError). The message names both types.
class TypeError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// A message is truncated or corrupt (Python: pickle.UnpicklingError).
class DecodeError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// An exception of a type that cannot be rebuilt was raised in another process
/// (Python: multiprocessing.managers.RemoteError / pool's re-raised exceptions).
class RemoteError : public ProcessError {
 public:
  RemoteError(std::string type_name, const std::string& message, pid_t pid = 0)
      : ProcessError(type_name + ": " + message +
                     (pid != 0 ? " (in process " + std::to_string(pid) + ")" : "")),
        type_name_(std::move(type_name)),
        pid_(pid) {}
  /// The demangled type name of the original exception.
  const std::string& type_name() const noexcept { return type_name_; }
  /// The pid of the process that raised it, 0 when unknown.
  pid_t pid() const noexcept { return pid_; }

 private:
  std::string type_name_;
  pid_t pid_;
};

/// A worker process died while it held a task (Python's billiard: WorkerLostError).
class WorkerLostError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// A Barrier was aborted or reset while a process waited on it
/// (Python: threading.BrokenBarrierError).
class BrokenBarrierError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// A value is out of its allowed range, e.g. a BoundedSemaphore released too often
/// (Python: ValueError).
class ValueError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

}  // namespace multiprocessing
