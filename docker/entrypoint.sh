#!/bin/sh
# Starts the earshot binary built for this GPU's compute capability.
#
# The CUDA image carries one binary per architecture (earshot-sm75,
# earshot-sm80, ...): candle compiles its kernels for a single compute
# capability per build. This picks the highest one not above the GPU's
# (read from nvidia-smi, or EARSHOT_COMPUTE_CAP=86 to force it). A GPU
# newer than every build gets the highest one: candle's PTX kernels are
# compiled by the driver for it, but its ahead-of-time quantized kernels
# are not, so build that capability too. Without a GPU it runs `earshot`,
# the lowest build.
set -eu
bin=${EARSHOT_BIN_DIR:-/usr/local/bin}
cap=${EARSHOT_COMPUTE_CAP:-}
if [ -z "$cap" ] && command -v nvidia-smi >/dev/null 2>&1; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .' || true)
fi
pick="$bin/earshot"
best=0
case "$cap" in
  '' | *[!0-9]*) ;;
  *)
    for b in "$bin"/earshot-sm*; do
      [ -x "$b" ] || continue
      c=${b##*-sm}
      if [ "$c" -le "$cap" ] && [ "$c" -gt "$best" ]; then
        best=$c
        pick=$b
      fi
    done
    ;;
esac
exec "$pick" "$@"
