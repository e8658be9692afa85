# Registers the packaging test (find_package after install, and add_subdirectory).
set(_mp_pkg_flags "")
if(MP_SANITIZE STREQUAL "address")
  set(_mp_pkg_flags "-fsanitize=address,undefined")
elseif(MP_SANITIZE STREQUAL "thread")
  set(_mp_pkg_flags "-fsanitize=thread")
endif()
add_test(NAME packaging_find_package_and_add_subdirectory
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/packaging/check.sh ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR} "${_mp_pkg_flags}")
set_tests_properties(packaging_find_package_and_add_subdirectory PROPERTIES LABELS fast TIMEOUT 600)
