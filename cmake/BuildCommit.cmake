# Writes common/build_info_generated.h (the version and the commit) at build
# time, on every build: a new commit does not re-run cmake, so the configure
# step cannot know it. configure_file leaves OUTPUT untouched when its
# content is the same, so an unchanged commit rebuilds nothing; a changed one
# recompiles common/build_info.cc alone and relinks. Never fails the build:
# outside a git checkout (a release tarball) or without git the commit is
# "unknown".
#
#   cmake -DSOURCE_DIR=... -DGIT_EXECUTABLE=... -DVERSION=... -DTEMPLATE=...
#         -DOUTPUT=... -P cmake/BuildCommit.cmake

set(SB_BUILD_VERSION "${VERSION}")
set(SB_BUILD_COMMIT "unknown")

if(GIT_EXECUTABLE AND EXISTS "${GIT_EXECUTABLE}")
  execute_process(
    COMMAND "${GIT_EXECUTABLE}" rev-parse --show-toplevel
    WORKING_DIRECTORY "${SOURCE_DIR}"
    OUTPUT_VARIABLE top
    RESULT_VARIABLE rc
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(rc EQUAL 0 AND NOT top STREQUAL "")
    # Only the source tree's own checkout counts: a tarball unpacked inside
    # some other repository was not built from that repository's commit.
    file(REAL_PATH "${top}" top)
    file(REAL_PATH "${SOURCE_DIR}" source)
    if(top STREQUAL source)
      # Tags excluded: the version is the version, the commit is a hash
      # (with -dirty for uncommitted changes).
      execute_process(
        COMMAND "${GIT_EXECUTABLE}" describe --always --dirty --abbrev=12 --exclude=*
        WORKING_DIRECTORY "${SOURCE_DIR}"
        OUTPUT_VARIABLE commit
        RESULT_VARIABLE rc
        OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      if(rc EQUAL 0 AND commit MATCHES "^[0-9a-f]+(-dirty)?$")
        set(SB_BUILD_COMMIT "${commit}")
      endif()
    endif()
  endif()
endif()

configure_file("${TEMPLATE}" "${OUTPUT}" @ONLY)
