#!/usr/bin/env bash
# The GPU check of the cuda backend, for a machine with an NVIDIA GPU (driver and CUDA 12
# libraries: libcuda, libcublas, libnvrtc) that cannot build or download anything: build the
# binary elsewhere (`cargo build --release`), copy the repository with target/release/topolab,
# and run from its root:
#
#   bash scripts/gpu-check.sh [TOPOLAB_BINARY] [OUT_DIR]
#
# It runs, each step with a time limit:
#   1. the device as the driver sees it (nvidia-smi, where present);
#   2. `topolab calibrate --backend cuda`: first the agreement check (the cuda and cpu backends
#      train the same proxy from the same seed to the same loss curve, at fp32 and, on Ampere
#      and later, tf32 and bf16), then GEMM throughput per shape class and precision (large
#      square GEMMs quoted against the catalogue peak), copy bandwidths, launch overhead;
#   3. `topolab validate scenarios/gpu/inception-v3-gpu.toml`: replays of a scaled Inception-v3
#      on the GPU with 1 worker and 1 PS, and with 2 workers sharing the GPU, each next to the
#      simulator's prediction from the calibrated profile (target: p50 step time within 10%).
# and writes one results file, OUT_DIR/results.md (with the profile, the validation CSV and
# every log beside it). Exit status: 0 when every step ran and every target was met, 1 when a
# target was missed, 2 when a step could not run.
set -u -o pipefail

BIN=${1:-target/release/topolab}
OUT=${2:-${OUT:-gpu-check}}
mkdir -p "$OUT"
RESULTS="$OUT/results.md"
STATUS=0

if [ ! -x "$BIN" ]; then
  echo "gpu-check: no topolab binary at $BIN (build it with cargo build --release and copy it here)" >&2
  exit 2
fi

section() { printf '\n## %s\n\n' "$1" >>"$RESULTS"; }
quote() { printf '```\n' >>"$RESULTS"; cat "$1" >>"$RESULTS"; printf '```\n' >>"$RESULTS"; }

{
  echo "# topolab GPU check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- binary: $("$BIN" --version 2>&1 | head -1)"
  echo "- host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
} >"$RESULTS"

section "Device"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >"$OUT/device.txt" 2>&1 || true
else
  echo "nvidia-smi not found; the device as topolab sees it is in the calibration below" >"$OUT/device.txt"
fi
quote "$OUT/device.txt"

section "Calibration (agreement with the cpu backend, GEMM rates, copies, launches)"
timeout 900 "$BIN" calibrate --backend cuda --launcher local --out "$OUT/gpu-profile.toml" \
  >"$OUT/calibrate.txt" 2>&1
rc=$?
quote "$OUT/calibrate.txt"
if [ $rc -ne 0 ]; then
  echo "**calibration failed (exit $rc)**; the replays need its profile, so the check stops here." >>"$RESULTS"
  echo "gpu-check: calibration failed (exit $rc); see $RESULTS" >&2
  [ $rc -eq 1 ] && exit 1 || exit 2
fi

section "Replays on the GPU against the simulator's prediction"
timeout 1200 "$BIN" validate scenarios/gpu/inception-v3-gpu.toml --profile "$OUT/gpu-profile.toml" \
  --launcher local --out "$OUT/validation" >"$OUT/validate.txt" 2>&1
rc=$?
quote "$OUT/validate.txt"
if [ $rc -ne 0 ]; then
  echo "**validation failed (exit $rc)**" >>"$RESULTS"
  STATUS=2
else
  # Target: each configuration's predicted p50 step time within 10% of the measured one.
  csv="$OUT/validation/validation.csv"
  awk -F, -v out="$OUT/targets.txt" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    {
      ape = $col["ape_p50_pct"] + 0
      printf "%s: predicted p50 %.4f s, measured %.4f s, error %.1f%% (target <= 10%%): %s\n",
        $col["configuration"], $col["pred_p50_s"], $col["meas_p50_s"], ape, (ape <= 10 ? "met" : "MISSED") > out
      if (ape > 10) missed = 1
    }
    END { exit missed }' "$csv"
  [ $? -ne 0 ] && STATUS=1
  section "Targets"
  quote "$OUT/targets.txt"
  for run in "$OUT"/validation/runs/*/replay/summary.json; do
    [ -f "$run" ] || continue
    { echo "$run"; grep -A 8 '"compute"' "$run"; } >>"$OUT/compute.txt" 2>/dev/null || true
  done
  if [ -s "$OUT/compute.txt" ]; then
    section "Devices the replays computed on"
    quote "$OUT/compute.txt"
  fi
fi

section "Files"
echo "gpu-profile.toml (the profile), validation/validation.csv, validation/runs/*/replay (each replay's run directory)" >>"$RESULTS"
echo "gpu-check: wrote $RESULTS (status $STATUS)"
exit $STATUS
