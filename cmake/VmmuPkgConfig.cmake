# SPDX-License-Identifier: MIT
#
# Runs inside `cmake --install` (an install(CODE) of CMakeLists.txt), where
# CMAKE_INSTALL_PREFIX is the prefix being installed to: writes vmmu.pc and
# vmmu-guest.pc for it into VMMU_PC_OUT, from where the next install rule
# copies them.  Set by the caller: VMMU_PC_IN (the directory of the .pc.in
# templates), VMMU_PC_OUT, VMMU_PC_VERSION, and VMMU_PC_LIBDIR and
# VMMU_PC_INCLUDEDIR as GNUInstallDirs gave them (relative to the prefix,
# or absolute).

get_filename_component(VMMU_PC_PREFIX "${CMAKE_INSTALL_PREFIX}" ABSOLUTE)
# Relative directories are written under ${prefix}, so the files stay
# readable and `pkg-config --define-prefix` can relocate them.
foreach(_vmmu_dir VMMU_PC_LIBDIR VMMU_PC_INCLUDEDIR)
  if(NOT IS_ABSOLUTE "${${_vmmu_dir}}")
    set(${_vmmu_dir} "\${prefix}/${${_vmmu_dir}}")
  endif()
endforeach()
configure_file("${VMMU_PC_IN}/vmmu.pc.in" "${VMMU_PC_OUT}/vmmu.pc" @ONLY)
configure_file("${VMMU_PC_IN}/vmmu-guest.pc.in" "${VMMU_PC_OUT}/vmmu-guest.pc" @ONLY)
