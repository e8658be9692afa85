# The two-program remote manager test: tests/managers/remote_server serves named objects on
# 127.0.0.1 with an authkey and runs tests/managers/remote_client (a separate program) against
# it: writes, a wrong key, a client killed mid-call, an oversize message.
add_executable(managers_remote_server ${CMAKE_CURRENT_SOURCE_DIR}/managers/remote_server.cpp)
target_link_libraries(managers_remote_server PRIVATE multiprocessing::multiprocessing)
add_executable(managers_remote_client ${CMAKE_CURRENT_SOURCE_DIR}/managers/remote_client.cpp)
target_link_libraries(managers_remote_client PRIVATE multiprocessing::multiprocessing)
add_test(NAME managers_remote_two_programs
  COMMAND managers_remote_server $<TARGET_FILE:managers_remote_client>)
set_tests_properties(managers_remote_two_programs PROPERTIES LABELS fast TIMEOUT 300
  PASS_REGULAR_EXPRESSION "PASS")
