# Registers the compile-time checks of pool.hpp: a capturing lambda as a Pool task must fail
# to compile with the static_assert that says to pass the data as arguments.
add_test(NAME pool_capturing_lambda_refused
  COMMAND ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only -I${PROJECT_SOURCE_DIR}/include
          ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/pool_capturing_lambda.cpp)
set_tests_properties(pool_capturing_lambda_refused PROPERTIES
  LABELS fast TIMEOUT 300 PASS_REGULAR_EXPRESSION "pass the data as arguments")
