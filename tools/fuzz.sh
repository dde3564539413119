#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ and runs the frame
# fuzzer for SECONDS (default 60) on a copy of its seed corpus, so the corpus
# in the tree only changes when someone copies new inputs back on purpose.
# Exits non-zero if the fuzzer finds a crash (the input is left in
# build-fuzz/artifacts/). Usage: tools/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
dir=build-fuzz
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DSWITCHBOARD_FUZZ=ON \
  -DSWITCHBOARD_BUILD_TESTS=OFF -DSWITCHBOARD_BUILD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)" --target frame_fuzzer

corpus=$dir/corpus/frame
mkdir -p "$corpus" "$dir/artifacts"
for f in protocol/fuzz/corpus/*; do
  [ -e "$corpus/${f##*/}" ] || cp "$f" "$corpus/"
done
echo "fuzz: frame_fuzzer for ${seconds}s on $corpus"
"$dir/bin/frame_fuzzer" -max_total_time="$seconds" -print_final_stats=1 \
  -artifact_prefix="$dir/artifacts/" "$corpus"
