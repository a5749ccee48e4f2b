# ansan_require_package(<Name> <version> <debian-package>)
# find_package that fails with the Debian package to install, since ansan's dependencies
# come from Debian packages only (nothing is downloaded at configure time).
macro(ansan_require_package name version debian_package)
  find_package(${name} ${version} QUIET)
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR "ansan needs ${name} ${version} or newer: apt-get install ${debian_package}")
  endif()
endmacro()
