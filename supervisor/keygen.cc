#include "supervisor/keygen.h"

#include "common/curve.h"
#include "common/exit_codes.h"

namespace sb::supervisor {

int RunKeygen(const std::string& secret_file, bool force, std::ostream& out, std::ostream& err) {
  Result<curve::Keypair> keys = curve::Generate();
  if (!keys.ok()) {
    err << "switchboard: fatal: unable to generate a key: " << keys.status().message() << "\n";
    return kExitFailure;
  }
  if (Status s = curve::WriteSecretFile(secret_file, keys->secret_key, force); !s.ok()) {
    err << "switchboard: fatal: unable to write the secret key: " << s.message() << "\n";
    return kExitFailure;
  }
  // Only once the secret is safely on disk: a public key printed for a
  // secret that was never kept would be configured on other nodes in vain.
  out << keys->public_key << "\n";
  return out.flush() ? kExitOk : kExitFailure;
}

}  // namespace sb::supervisor
