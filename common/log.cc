#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <cstdio>

namespace sb {

void InitLogging(const std::string& program, const std::string& level) {
  auto logger = spdlog::stderr_logger_st(program);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %v");
  const char* env = ::getenv("LOG_LEVEL");
  logger->set_level(spdlog::level::from_str(env && *env ? env : level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void PrintFatal(const std::string& program, const std::string& what, const std::string& why) {
  std::fprintf(stderr, "%s: fatal: unable to %s: %s\n", program.c_str(), what.c_str(), why.c_str());
}

}  // namespace sb
