# Build options (all prefixed MP_) and the compile options shared by every target.
include(GNUInstallDirs)

option(MP_BUILD_TESTS "Build the GoogleTest suites" ${PROJECT_IS_TOP_LEVEL})
option(MP_BUILD_EXAMPLES "Build the examples and the seed tour" ${PROJECT_IS_TOP_LEVEL})
option(MP_BUILD_BENCH "Build the benchmark programs" ${PROJECT_IS_TOP_LEVEL})
option(MP_BUILD_FUZZ "Build the libFuzzer targets (needs clang++)" ${PROJECT_IS_TOP_LEVEL})
set(MP_SANITIZE "" CACHE STRING "Sanitizers: empty, 'address' (ASan+UBSan) or 'thread' (TSan)")

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "Build type" FORCE)
endif()

if(MP_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(MP_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT MP_SANITIZE STREQUAL "")
  message(FATAL_ERROR "MP_SANITIZE must be empty, 'address' or 'thread', not '${MP_SANITIZE}'")
endif()

function(mp_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-missing-field-initializers)
endfunction()
