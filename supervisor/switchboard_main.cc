// switchboard: the supervisor daemon (`run`) and its offline tools (`check`).
// Exit codes: common/exit_codes.h (0 ok, 1 root gave up / failed, 2 usage or
// configuration error).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/exit_codes.h"
#include "common/log.h"
#include "supervisor/daemon.h"
#include "supervisor/spec_loader.h"

namespace {

constexpr const char* kProgram = "switchboard";

// Loads and validates CONFIG; prints the error (file:line:column: key ...) on failure.
sb::Result<sb::supervisor::TreeSpec> Load(const std::string& path) {
  auto spec = sb::supervisor::LoadTreeSpecFile(path);
  if (!spec.ok()) std::fprintf(stderr, "%s: %s\n", kProgram, spec.status().message().c_str());
  return spec;
}

int Check(const std::string& path) {
  auto spec = Load(path);
  if (!spec.ok()) return sb::kExitUsage;
  for (const std::string& w : spec->warnings)
    std::fprintf(stderr, "%s: warning: %s\n", kProgram, w.c_str());
  std::printf("%s: ok\n", path.c_str());
  return sb::kExitOk;
}

int Run(const std::string& path) {
  auto spec = Load(path);
  if (!spec.ok()) return sb::kExitUsage;
  sb::InitLogging(kProgram);
  auto daemon = sb::supervisor::Daemon::Create(std::move(spec.value()));
  if (!daemon.ok()) {
    sb::PrintFatal(kProgram, "start node", daemon.status().message());
    return sb::kExitFailure;
  }
  return daemon.value()->Run();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"switchboard: a supervision tree of OS processes with OTP semantics"};
  app.require_subcommand(1);
  std::string config;
  auto* run = app.add_subcommand("run", "run the supervision tree described by CONFIG");
  run->add_option("CONFIG", config, "YAML topology")->required();
  auto* check = app.add_subcommand("check", "validate CONFIG without running anything");
  check->add_option("CONFIG", config, "YAML topology")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? sb::kExitOk : sb::kExitUsage;
  }
  if (*check) return Check(config);
  return Run(config);
}
