#!/usr/bin/env bash
# Fuzzes every Keel decoder and third-party evaluator with cargo-fuzz
# (libFuzzer). Not part of CI: run it by hand, e.g. before a release.
#
#   chaos/fuzz/run.sh                 # every target, 60 s each, two at a time
#   chaos/fuzz/run.sh 1800            # 30 minutes each
#   chaos/fuzz/run.sh 600 policy_put  # some targets only
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The seed corpus is written
# from the tests' material first (examples/seed.rs); findings land in
# chaos/fuzz/artifacts/<target>/, logs in chaos/fuzz/logs/<target>.log, and
# each target's last libFuzzer status line (execs, time) is printed at the end.
#
# The judging targets (policy_put, policy_evaluate, manifest, judge_frames) run in fork
# mode with -ignore_ooms: an allocation past the judging budget is an OOM
# in process, and in keeld the sandbox's memory_budget verdict, not a bug.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../.ci/env.sh"
keel_build_deps
export CARGO_TARGET_DIR="${KEEL_FUZZ_TARGET_DIR:-/var/tmp/keel-fuzz-target}"
# cargo-fuzz passes flags that stable rustc accepts only with this set.
export RUSTC_BOOTSTRAP=1
cd "$here"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(policy_put policy_evaluate manifest trust_documents peer_messages snapshot_decode request_convert token
    judge_frames redis_replies envoy_descriptors audit_lines)
fi
jobs="${KEEL_FUZZ_JOBS:-2}"

echo "==> seed corpus"
cargo run --quiet --release --example seed
echo "==> building targets"
cargo fuzz build --sanitizer none -O "${targets[@]/#/}" 2>&1 | tail -n 3 || cargo fuzz build --sanitizer none -O
mkdir -p logs

run_target() {
  local target="$1" extra=()
  case "$target" in
    policy_put | policy_evaluate | manifest | judge_frames) extra=(-fork=1 -ignore_ooms=1 -ignore_timeouts=1) ;;
  esac
  cargo fuzz run --sanitizer none -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 \
    -print_final_stats=1 "${extra[@]}" >"logs/$target.log" 2>&1
  echo "$target: exit $? ($(grep -E '^#[0-9]+|stat::number_of_executed_units' "logs/$target.log" | tail -n 1))"
}

running=0
for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${seconds}s"
  run_target "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
echo "==> findings (empty: none)"
ls -1 artifacts/*/ 2>/dev/null || true
