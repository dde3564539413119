#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each on a
# copy of its seed corpus, so the corpora in the tree only change when someone
# copies new inputs back on purpose. SECONDS (default 60) is the total: the
# frame fuzzer gets a third of it rounded up, the mesh fuzzer half of the
# rest rounded up, the API fuzzer half of what is left rounded up, the
# hand-off state fuzzer the rest. Exits
# non-zero if a fuzzer finds a crash (the input is left in
# build-fuzz/artifacts/); each runs even if one before it failed.
# Usage: tools/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
dir=build-fuzz
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DSWITCHBOARD_FUZZ=ON \
  -DSWITCHBOARD_BUILD_TESTS=OFF -DSWITCHBOARD_BUILD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)" --target frame_fuzzer mesh_fuzzer api_fuzzer handoff_fuzzer

# fuzz NAME SEEDS SECONDS: runs NAME on build-fuzz/corpus/NAME, seeded from SEEDS.
fuzz() {
  local name=$1 seeds=$2 time=$3
  local corpus=$dir/corpus/${name%_fuzzer}
  if [ "$time" -le 0 ]; then
    echo "fuzz: $name skipped (no time left)"
    return 0
  fi
  mkdir -p "$corpus" "$dir/artifacts"
  for f in "$seeds"/*; do
    [ -e "$corpus/${f##*/}" ] || cp "$f" "$corpus/"
  done
  echo "fuzz: $name for ${time}s on $corpus"
  "$dir/bin/$name" -max_total_time="$time" -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "$corpus"
}

frame_seconds=$(((seconds + 2) / 3))
mesh_seconds=$(((seconds - frame_seconds + 1) / 2))
api_seconds=$(((seconds - frame_seconds - mesh_seconds + 1) / 2))
status=0
fuzz frame_fuzzer protocol/fuzz/corpus "$frame_seconds" || status=1
fuzz mesh_fuzzer protocol/fuzz/corpus_mesh "$mesh_seconds" || status=1
fuzz api_fuzzer worker/fuzz/corpus_api "$api_seconds" || status=1
fuzz handoff_fuzzer worker/fuzz/corpus_handoff \
  "$((seconds - frame_seconds - mesh_seconds - api_seconds))" || status=1
exit "$status"
