#include "common/key_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace sb {

Result<std::string> ReadPrivateKeyFile(const std::string& path, size_t min_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::InvalidConfig("key file " + path + ": " + std::strerror(errno));
  }
  // As ssh does for private keys: a key others could read is no longer
  // only the owner's, and a key others could write is not the owner's key.
  if ((st.st_mode & 077) != 0) {
    return Status::InvalidConfig("key file " + path +
                                 ": group or others have access to it (chmod 600 it)");
  }
  std::ifstream in(path);
  std::string key;
  if (!in || !std::getline(in, key)) {
    return Status::InvalidConfig("key file " + path + ": unreadable or empty");
  }
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ' || key.back() == '\t')) {
    key.pop_back();
  }
  if (key.empty() || key.size() < min_bytes) {
    return Status::InvalidConfig("key file " + path + ": the key is under " +
                                 std::to_string(min_bytes > 0 ? min_bytes : 1) + " bytes");
  }
  return key;
}

}  // namespace sb
