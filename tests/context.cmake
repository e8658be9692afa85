# Compile-time checks of context.hpp: a context whose start method is known at compile time
# (mp::get_context<M>()) refuses, under spawn and forkserver, what cannot cross to a fresh
# program: each file below must fail to compile with the static_assert's message.
foreach(check context_spawn_capture:pass.the.data.as.arguments
              context_forkserver_unserializable:every.argument.must.be.serializable)
  string(REPLACE ":" ";" parts ${check})
  list(GET parts 0 name)
  list(GET parts 1 expect)
  add_test(NAME ${name}_refused
    COMMAND ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only -I${PROJECT_SOURCE_DIR}/include
            ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/${name}.cpp)
  set_tests_properties(${name}_refused PROPERTIES LABELS fast TIMEOUT 300 PASS_REGULAR_EXPRESSION "${expect}")
endforeach()

# The forkserver starts with glibc tunables of its own added to GLIBC_TUNABLES; a user's own
# tunables must reach its children unchanged (ChildSeesTheParentsEnvironmentAndDirectory
# compares them), so run that case once more with some set.
add_test(NAME forkserver_children_keep_the_users_glibc_tunables
  COMMAND ${CMAKE_COMMAND} -E env GLIBC_TUNABLES=glibc.malloc.tcache_count=5
          $<TARGET_FILE:test_process> --gtest_filter=*ChildSeesTheParentsEnvironmentAndDirectory/forkserver)
set_tests_properties(forkserver_children_keep_the_users_glibc_tunables PROPERTIES LABELS fast TIMEOUT 120
  ENVIRONMENT "MP_SOURCE_DIR=${PROJECT_SOURCE_DIR}" FAIL_REGULAR_EXPRESSION "SKIPPED|FAILED")
