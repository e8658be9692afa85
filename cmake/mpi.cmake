# mpi.cmake: the cross-machine pool, target multiprocessing::mpi (include/multiprocessing/mpi.hpp,
# src/mpi/), with its tests (tests/mpi/), examples (examples/mpi/) and benchmark (bench/mpi/).
# Built only where an MPI (Open MPI) is found, so the core library never depends on MPI.
find_package(MPI COMPONENTS CXX QUIET)
if(NOT MPI_CXX_FOUND)
  message(STATUS "multiprocessing: MPI not found; skipping multiprocessing::mpi, its tests, examples and benchmark "
                 "(Debian: apt-get install libopenmpi-dev openmpi-bin)")
  return()
endif()
message(STATUS "multiprocessing: MPI found (${MPI_CXX_LIBRARY_VERSION_STRING}); building multiprocessing::mpi")

file(GLOB MP_MPI_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/../src/mpi/*.cpp)
add_library(multiprocessing_mpi ${MP_MPI_SOURCES})
add_library(multiprocessing::mpi ALIAS multiprocessing_mpi)
target_link_libraries(multiprocessing_mpi PUBLIC multiprocessing::multiprocessing MPI::MPI_CXX)
set_target_properties(multiprocessing_mpi PROPERTIES POSITION_INDEPENDENT_CODE ON EXPORT_NAME mpi)
mp_set_warnings(multiprocessing_mpi)

find_program(MP_MPIRUN NAMES mpirun mpiexec HINTS ${MPIEXEC_EXECUTABLE})
set(MP_MPI_DIR ${CMAKE_CURRENT_LIST_DIR}/..)

if(MP_BUILD_TESTS)
  find_package(GTest REQUIRED)
  add_executable(test_mpi_pool ${MP_MPI_DIR}/tests/mpi/test_mpi_pool.cpp)
  target_link_libraries(test_mpi_pool PRIVATE multiprocessing::mpi GTest::gtest)
  mp_set_warnings(test_mpi_pool)
  add_executable(mpi_probe ${MP_MPI_DIR}/tests/mpi/mpi_probe.cpp)
  target_link_libraries(mpi_probe PRIVATE multiprocessing::mpi)
  mp_set_warnings(mpi_probe)
  # Open MPI as root needs these; --oversubscribe: more ranks than the cores here.
  # detect_leaks=0: Open MPI's own start-up allocations (hwloc, PMIx, the BTLs) are never freed
  # and would make LeakSanitizer fail every rank of the ASan build.
  set(MP_MPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=0;MP_MPIRUN=${MP_MPIRUN}")
  if(MP_SANITIZE STREQUAL "thread")
    # Open MPI is not instrumented: keep TSan to this project's code (tests/mpi/tsan.supp).
    list(APPEND MP_MPI_ENV "TSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/mpi/tsan.supp")
  endif()
  add_test(NAME mpi_pool_np3 COMMAND ${MP_MPIRUN} --oversubscribe -np 3 $<TARGET_FILE:test_mpi_pool>)
  add_test(NAME mpi_pool_single COMMAND $<TARGET_FILE:test_mpi_pool>)
  add_test(NAME mpi_pool_spawn COMMAND $<TARGET_FILE:mpi_probe> spawn)
  add_test(NAME mpi_finalize_early COMMAND ${MP_MPIRUN} --oversubscribe -np 3 $<TARGET_FILE:mpi_probe> finalize)
  set_tests_properties(mpi_finalize_early PROPERTIES PASS_REGULAR_EXPRESSION "OK finalize")
  add_test(NAME mpi_worker_death COMMAND bash ${MP_MPI_DIR}/tests/mpi/worker_death.sh $<TARGET_FILE:mpi_probe>)
  add_test(NAME mpi_two_hosts_netns COMMAND bash ${MP_MPI_DIR}/tests/mpi/netns_two_hosts.sh $<TARGET_FILE:mpi_probe>)
  set_tests_properties(mpi_pool_np3 mpi_pool_single mpi_pool_spawn mpi_finalize_early mpi_worker_death mpi_two_hosts_netns
    PROPERTIES LABELS fast TIMEOUT 60 ENVIRONMENT "${MP_MPI_ENV}")
  set_tests_properties(mpi_two_hosts_netns PROPERTIES SKIP_RETURN_CODE 77)
endif()

if(MP_BUILD_EXAMPLES)
  add_executable(seed_16_mpi_pool ${MP_MPI_DIR}/examples/mpi/16_mpi_pool.cpp)
  target_link_libraries(seed_16_mpi_pool PRIVATE multiprocessing::mpi)
  target_include_directories(seed_16_mpi_pool PRIVATE ${MP_MPI_DIR}/examples/seed)
  set_target_properties(seed_16_mpi_pool PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/seed)
  add_executable(example_mpi ${MP_MPI_DIR}/examples/mpi/mpi.cpp)
  target_link_libraries(example_mpi PRIVATE multiprocessing::mpi)
endif()

if(MP_BUILD_BENCH)
  add_executable(bench_mpi ${MP_MPI_DIR}/bench/mpi/bench_mpi.cpp)
  target_link_libraries(bench_mpi PRIVATE multiprocessing::mpi)
  target_include_directories(bench_mpi PRIVATE ${MP_MPI_DIR}/bench)
  target_compile_definitions(bench_mpi PRIVATE MP_BENCH_DIR="${MP_MPI_DIR}/bench/mpi" MP_MPIRUN="${MP_MPIRUN}")
  set_target_properties(bench_mpi PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()

# Installed as multiprocessing::mpi in its own export set (the core's set is written by
# cmake/install.cmake before this file runs). multiprocessingConfig.cmake includes it when
# present, after find_dependency(MPI COMPONENTS CXX).
install(TARGETS multiprocessing_mpi EXPORT multiprocessingMpiTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT multiprocessingMpiTargets NAMESPACE multiprocessing::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/multiprocessing)
