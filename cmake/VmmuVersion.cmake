# SPDX-License-Identifier: MIT
#
# Reads the version from include/vmmu/vmmu.h, its one source: the header's
# VMMU_VERSION_MAJOR/MINOR/PATCH become VMMU_VERSION (for project()), and
# VMMU_ABI_VERSION the SONAME's number.  Included before project(), so it
# uses nothing a project() would set up.

set(_vmmu_header "${CMAKE_CURRENT_LIST_DIR}/../include/vmmu/vmmu.h")
file(STRINGS "${_vmmu_header}" _vmmu_defines
     REGEX "^#define VMMU_(VERSION_MAJOR|VERSION_MINOR|VERSION_PATCH|ABI_VERSION)[ \t]")
foreach(_vmmu_name VERSION_MAJOR VERSION_MINOR VERSION_PATCH ABI_VERSION)
  if(NOT _vmmu_defines MATCHES "#define VMMU_${_vmmu_name}[ \t]+([0-9]+)")
    message(FATAL_ERROR "include/vmmu/vmmu.h: no '#define VMMU_${_vmmu_name} <number>'")
  endif()
  set(VMMU_${_vmmu_name} "${CMAKE_MATCH_1}")
endforeach()
# VMMU_VERSION_NUMBER is MAJOR * 10000 + MINOR * 100 + PATCH: two digits each.
if(VMMU_VERSION_MINOR GREATER 99 OR VMMU_VERSION_PATCH GREATER 99)
  message(FATAL_ERROR "vmmu.h: VMMU_VERSION_MINOR and VMMU_VERSION_PATCH must stay below 100")
endif()
set(VMMU_VERSION "${VMMU_VERSION_MAJOR}.${VMMU_VERSION_MINOR}.${VMMU_VERSION_PATCH}")
# A version bump in the header re-runs CMake, so nothing derived goes stale.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_vmmu_header}")
unset(_vmmu_header)
unset(_vmmu_defines)
unset(_vmmu_name)
