# Installation with an exported CMake package: find_package(multiprocessing CONFIG).
include(CMakePackageConfigHelpers)

install(TARGETS multiprocessing EXPORT multiprocessingTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT multiprocessingTargets NAMESPACE multiprocessing::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/multiprocessing)
configure_package_config_file(cmake/multiprocessingConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/multiprocessingConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/multiprocessing)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/multiprocessingConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/multiprocessingConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/multiprocessingConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/multiprocessing)
