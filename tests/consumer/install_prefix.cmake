# cmake -DANSAN_BUILD_DIR=<build> -DANSAN_PREFIX=<prefix> -P install_prefix.cmake
# Installs ansan from a build tree into a fresh prefix, for the find_package packaging test.
file(REMOVE_RECURSE "${ANSAN_PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${ANSAN_BUILD_DIR}" --prefix "${ANSAN_PREFIX}"
                COMMAND_ERROR_IS_FATAL ANY)
