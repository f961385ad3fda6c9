# find_package(dilated) + target_link_libraries(app dilated::dilated) for installed builds.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS dilated EXPORT dilatedTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/dilated DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT dilatedTargets NAMESPACE dilated:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dilated)
configure_package_config_file(cmake/dilatedConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/dilatedConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dilated)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/dilatedConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/dilatedConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/dilatedConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dilated)
