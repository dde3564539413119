# Runs PROGRAM ARGS and checks what an operator expects of `--version`: exit
# status 0 and exactly one line "NAME VERSION (commit COMMIT)" on stdout.
#
#   cmake -DPROGRAM=... -DARGS=--version -DNAME=... -DVERSION=... -P check_version.cmake
execute_process(
  COMMAND "${PROGRAM}" ${ARGS}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: exit status ${rc}, expected 0\n${out}${err}")
endif()
string(REPLACE "." "\\." version_re "${VERSION}")
string(REPLACE "+" "\\+" version_re "${version_re}")
if(NOT out MATCHES "^${NAME} ${version_re} \\(commit ([0-9a-f]+(-dirty)?|unknown)\\)\n$")
  message(FATAL_ERROR "${PROGRAM} ${ARGS}: unexpected output '${out}'")
endif()
message(STATUS "${out}")
