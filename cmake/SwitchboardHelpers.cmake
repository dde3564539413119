# Project-wide target helpers: warnings, sanitizers, libraries, tests.

function(sb_target_defaults target)
  # GCC 12 reports false positives for these two at -O2: maybe-uninitialized
  # through std::variant's storage, dangling-pointer inside yaml-cpp 0.7's
  # node/impl.h. Everything else in -Wall -Wextra stays an error. Clang (the
  # fuzz build) knows neither flag and would reject them under -Werror.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized -Wno-dangling-pointer)
  endif()
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  if(SWITCHBOARD_SANITIZE)
    # -O1 -g1 (after the build type's -O2 -g, so they win): what the ASan
    # documentation recommends for speed, with line tables for its reports;
    # instrumented -O2 with full debug info compiles twice as slowly and keeps
    # the test run longer than CI's budget allows.
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer
                                             -fno-sanitize-recover=all -O1 -g1)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# sb_add_library(name SOURCES ... DEPS ...)
function(sb_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  sb_target_defaults(${name})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# sb_add_executable(name SOURCES ... DEPS ...)
function(sb_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  sb_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()

# sb_add_test(name SOURCES ... DEPS ... [LABELS ...]) - one gtest binary, tests discovered.
function(sb_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  sb_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "${ARG_LABELS}")
endfunction()

# sb_add_fuzzer(name SOURCES ... DEPS ...) - a libFuzzer target (clang only,
# SWITCHBOARD_FUZZ). SOURCES holds the fuzz entry point and the code under
# test, compiled into the fuzzer itself so that it gets the fuzzer's coverage
# instrumentation and sanitizers; DEPS are the uninstrumented libraries it
# links (third-party code the fuzzer does not explore).
function(sb_add_fuzzer name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  sb_target_defaults(${name})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined
                                         -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
