// switchboard: the supervisor daemon (`run`), its offline check (`check`),
// the control client (status, restart, stop, start, scale, upgrade, reload,
// events), `publish` to the shards' HTTP API, `keygen` (the node's CURVE keypair) and
// `version` (as --version). Exit codes:
// common/exit_codes.h (0 ok, 1 root gave up / failed or request refused, 2 usage or configuration
// error, 3 daemon not running).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "common/build_info.h"
#include "common/command_line.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "supervisor/api_client.h"
#include "supervisor/control_cli.h"
#include "supervisor/control_server.h"
#include "supervisor/daemon.h"
#include "supervisor/keygen.h"
#include "supervisor/spec_loader.h"

namespace {

constexpr const char* kProgram = "switchboard";
constexpr const char* kDefaultControl = "/tmp/switchboard/node1.sock";

// Loads and validates CONFIG; prints the error (file:line:column: key ...) on failure.
sb::Result<sb::supervisor::TreeSpec> Load(const std::string& path) {
  auto spec = sb::supervisor::LoadTreeSpecFile(path);
  if (!spec.ok()) std::fprintf(stderr, "%s: %s\n", kProgram, spec.status().message().c_str());
  return spec;
}

int Check(const std::string& path) {
  auto spec = Load(path);
  if (!spec.ok()) return sb::kExitUsage;
  for (const std::string& w : spec->warnings) {
    std::fprintf(stderr, "%s: warning: %s\n", kProgram, w.c_str());
  }
  std::printf("%s: ok\n", path.c_str());
  return sb::kExitOk;
}

int Run(const std::string& path) {
  auto spec = Load(path);
  if (!spec.ok()) return sb::kExitUsage;
  sb::InitLogging(kProgram);
  auto daemon = sb::supervisor::Daemon::Create(std::move(spec.value()), path);
  if (!daemon.ok()) {
    sb::PrintFatal(kProgram, "start node", daemon.status().message());
    // A configuration the daemon cannot use (an untrusted runtime directory
    // included) is a configuration error; a resource it could not get is not.
    return daemon.status().code() == sb::Status::Code::kInvalidConfig ? sb::kExitUsage
                                                                      : sb::kExitFailure;
  }
  return daemon.value()->Run();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"switchboard: a supervision tree of OS processes with OTP semantics"};
  app.require_subcommand(1);
  std::string config, control, id;
  int count = 0;
  bool json = false;

  auto* run = app.add_subcommand("run", "run the supervision tree described by CONFIG");
  run->add_option("CONFIG", config, "YAML topology")->required();
  auto* check = app.add_subcommand("check", "validate CONFIG without running anything");
  check->add_option("CONFIG", config, "YAML topology")->required();
  auto* version = app.add_subcommand("version", "print the version and the build commit");
  std::string secret_file;
  bool force = false;
  auto* keygen = app.add_subcommand(
      "keygen", "write a new CURVE secret key (0600) and print its public key, for peer links");
  keygen->add_option("--secret-file", secret_file, "where the secret key goes")->required();
  keygen->add_flag("--force", force, "replace an existing file");

  // Client commands find the daemon through --control, or the control path in --config.
  auto client = [&](const char* name, const char* help) {
    auto* sub = app.add_subcommand(name, help);
    sub->add_option("--config", config, "YAML topology of the running node");
    sub->add_option("--control", control,
                    "control socket path (default " + std::string(kDefaultControl) + ")");
    return sub;
  };
  auto* status = client("status", "show the tree: pid, state, uptime, restarts, last exit");
  status->add_flag("--json", json, "print the daemon's reply as JSON");
  auto* tree = client("tree", "same as status");
  tree->add_flag("--json", json, "print the daemon's reply as JSON");
  CLI::App* simple[3];
  const char* simple_names[3] = {"restart", "stop", "start"};
  const char* simple_help[3] = {"stop then start a child or sub-supervisor (not counted)",
                                "stop a child or sub-supervisor; it stays stopped until started",
                                "start a stopped child or sub-supervisor"};
  for (int i = 0; i < 3; ++i) {
    simple[i] = client(simple_names[i], simple_help[i]);
    simple[i]->add_option("ID", id, "child or supervisor id")->required();
  }
  auto* scale = client("scale", "grow or shrink a replica set or simple_one_for_one supervisor");
  scale->add_option("ID", id, "replica set or supervisor id")->required();
  scale->add_option("N", count, "number of instances")
      ->required()
      ->check(CLI::Range(0, sb::supervisor::kMaxScaleCount));
  auto* upgrade = client("upgrade",
                         "hand a child with upgrade: handoff (or each one of a supervisor's) "
                         "over to a new process, keeping its connections");
  upgrade->add_option("ID", id, "child or supervisor id")->required();
  auto* reload = client("reload", "re-read the YAML and apply the difference");
  auto* events = client("events", "follow the event stream live");
  sb::supervisor::PublishArgs publish_args;
  std::string idempotency_key;
  auto* publish =
      app.add_subcommand("publish", "broadcast EVENT with payload JSON to TOPIC through the API");
  publish->add_option("--config", config,
                      "YAML topology with node.api (url, key_file); default: the default "
                      "topology's, " +
                          std::string(sb::supervisor::kDefaultApiUrl) + " and " +
                          std::string(sb::supervisor::kDefaultApiKeyFile));
  publish->add_option("TOPIC", publish_args.topic, "topic")->required();
  publish->add_option("EVENT", publish_args.event, "event")->required();
  publish->add_option("JSON", publish_args.payload_json, "payload, any JSON")->required();
  auto* idem = publish->add_option("--idempotency-key", idempotency_key,
                                   "a repeat with this key within 5 minutes is delivered once");

  if (std::optional<int> rc = sb::ParseCommandLine(app, argc, argv)) return *rc;
  if (*version) {
    std::printf("%s\n", sb::VersionLine(kProgram).c_str());
    return sb::kExitOk;
  }
  if (*keygen) return sb::supervisor::RunKeygen(secret_file, force, std::cout, std::cerr);
  if (*check) return Check(config);
  if (*run) return Run(config);
  if (*publish) {
    publish_args.url = sb::supervisor::kDefaultApiUrl;
    publish_args.key_file = sb::supervisor::kDefaultApiKeyFile;
    if (!config.empty()) {
      auto spec = Load(config);
      if (!spec.ok()) return sb::kExitUsage;
      if (spec->node.api.url.empty()) {
        std::fprintf(stderr, "%s: %s has no node.api (url, key_file)\n", kProgram, config.c_str());
        return sb::kExitUsage;
      }
      publish_args.url = spec->node.api.url;
      publish_args.key_file = spec->node.api.key_file;
    }
    if (*idem) publish_args.idempotency_key = idempotency_key;
    return sb::supervisor::RunPublish(publish_args, std::cout, std::cerr);
  }

  if (control.empty() && !config.empty()) {
    auto spec = Load(config);
    if (!spec.ok()) return sb::kExitUsage;
    control = spec->node.control;
  }
  if (control.empty()) control = kDefaultControl;
  using namespace sb::supervisor;
  if (*status || *tree) return RunStatus(control, json, std::cout, std::cerr);
  for (int i = 0; i < 3; ++i) {
    if (*simple[i]) return RunSimple(control, simple_names[i], id, std::cout, std::cerr);
  }
  if (*scale) return RunScale(control, id, count, std::cout, std::cerr);
  if (*upgrade) return RunUpgrade(control, id, std::cout, std::cerr);
  if (*reload) return RunReload(control, std::cout, std::cerr);
  if (*events) return RunEvents(control, std::cout, std::cerr);
  return sb::kExitUsage;
}
