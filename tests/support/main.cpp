// main.cpp: the main of every test program. mp::init comes first, as in any program that
// uses the library, so spawned and forkserver children are taken over before GoogleTest.
#include <gtest/gtest.h>

#include <multiprocessing.hpp>

int main(int argc, char** argv) {
  multiprocessing::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}


#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer's built-in suppressions for every test program. libstdc++ is not built with
// ThreadSanitizer, so the reference count of a std::exception_ptr is invisible to it: a task's
// exception is made by a pool's dispatcher thread, rethrown in the caller's thread, and its
// last reference may drop in either, which TSan reports as the destructor racing with the
// caller's earlier reads of what(), although the (atomic, uninstrumented) count orders them.
extern "C" const char* __tsan_default_suppressions() {
  return "race:__exception_ptr::__dest_thunk\n"
         "race:exception_ptr::_M_release\n";
}
#endif
