// main.cpp: the main of every test program. mp::init comes first, as in any program that
// uses the library, so spawned and forkserver children are taken over before GoogleTest.
#include <gtest/gtest.h>

#include <multiprocessing.hpp>

int main(int argc, char** argv) {
  multiprocessing::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
