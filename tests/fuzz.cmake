# fuzz.cmake: libFuzzer targets for the codec (tests/fuzz/), built with clang++ even though the
# main build uses g++: the codec is header-only, so clang++ compiles the target directly.
# Builds <build>/tests/fuzz_reduction and a seed corpus; registers the ctest test
# fuzz_reduction_short (label "fast"), a ~20 s run that fails on any crash, sanitizer report,
# leak, timeout or allocation over 64 MB. docs/fuzzing.md has the long-run command.
if(MP_BUILD_FUZZ)
  find_program(MP_CLANGXX NAMES clang++-14 clang++)
  if(NOT MP_CLANGXX)
    message(STATUS "multiprocessing: clang++ not found, fuzz targets skipped")
  else()
    set(_mp_fuzz_src ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_reduction.cpp)
    set(_mp_fuzz_bin ${CMAKE_CURRENT_BINARY_DIR}/fuzz_reduction)
    set(_mp_fuzz_seedgen ${CMAKE_CURRENT_BINARY_DIR}/fuzz_reduction_seedgen)
    set(_mp_fuzz_seeds ${CMAKE_CURRENT_BINARY_DIR}/fuzz_reduction_seeds)
    set(_mp_fuzz_flags -std=c++20 -g -O1 -I${PROJECT_SOURCE_DIR}/include)
    file(GLOB _mp_fuzz_deps CONFIGURE_DEPENDS
      ${PROJECT_SOURCE_DIR}/include/multiprocessing/reduction.hpp
      ${PROJECT_SOURCE_DIR}/include/multiprocessing/errors.hpp
      ${PROJECT_SOURCE_DIR}/include/multiprocessing/detail/codec*.hpp)

    add_custom_command(OUTPUT ${_mp_fuzz_bin}
      COMMAND ${MP_CLANGXX} ${_mp_fuzz_flags}
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
              ${_mp_fuzz_src} -o ${_mp_fuzz_bin}
      DEPENDS ${_mp_fuzz_src} ${_mp_fuzz_deps}
      COMMENT "clang++ fuzz_reduction (libFuzzer, ASan, UBSan)" VERBATIM)
    add_custom_command(OUTPUT ${_mp_fuzz_seeds}/.stamp
      COMMAND ${MP_CLANGXX} ${_mp_fuzz_flags} -DMP_FUZZ_WRITE_SEEDS ${_mp_fuzz_src} -o ${_mp_fuzz_seedgen}
      COMMAND ${CMAKE_COMMAND} -E rm -rf ${_mp_fuzz_seeds}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${_mp_fuzz_seeds}
      COMMAND ${_mp_fuzz_seedgen} ${_mp_fuzz_seeds}
      COMMAND ${CMAKE_COMMAND} -E touch ${_mp_fuzz_seeds}/.stamp
      DEPENDS ${_mp_fuzz_src} ${_mp_fuzz_deps}
      COMMENT "fuzz_reduction seed corpus" VERBATIM)
    add_custom_target(fuzz_reduction ALL DEPENDS ${_mp_fuzz_bin} ${_mp_fuzz_seeds}/.stamp)

    # New inputs go to a scratch corpus (the first directory); the seeds stay as generated.
    set(_mp_fuzz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_reduction_work)
    add_test(NAME fuzz_reduction_short
      COMMAND sh -c "rm -rf '${_mp_fuzz_work}' && mkdir -p '${_mp_fuzz_work}' && exec '${_mp_fuzz_bin}' -max_total_time=20 -timeout=10 -malloc_limit_mb=64 -rss_limit_mb=1024 -max_len=4096 -print_final_stats=1 '${_mp_fuzz_work}' '${_mp_fuzz_seeds}'")
    set_tests_properties(fuzz_reduction_short PROPERTIES LABELS fast TIMEOUT 120)
  endif()
endif()
