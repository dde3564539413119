#!/usr/bin/env bash
# Installs the Debian 12 packages Switchboard builds and tests with, if any
# are missing. Safe to run again: it does nothing when all are present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang-format clang libclang-rt-14-dev
  libzmq3-dev cppzmq-dev libyaml-cpp-dev prometheus-cpp-dev libspdlog-dev
  libgtest-dev libgmock-dev libboost1.81-dev libboost-json1.81-dev libcli11-dev libssl-dev
  # Membership from etcd: libcurl speaks to its JSON gateway; the tests start a real etcd.
  libcurl4-openssl-dev etcd-server
  procps prometheus
  # The browser test of the chat page (tests/browser) drives headless Chromium.
  chromium
)

# Node.js and npm run the end-to-end tests in tests/node. A node already on
# PATH (for example from NodeSource, which bundles npm) is used as it is.
if ! command -v node >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
