# shellcheck shell=bash
# scripts/lib/venv.sh — shared Python virtualenv for earshot's scripts.
#
# Source it, then call ensure_venv:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/venv.sh"
#   ensure_venv            # sets VENV and VENV_PY
#   "$VENV_PY" some.py
#
# ensure_venv creates <repo>/.venv (python3 -m venv) if missing, and
# pip-installs scripts/requirements-test.txt whenever that file changed since
# the last successful install (its sha256 is kept in .venv/.requirements.sha256).
# Set EARSHOT_VENV to use another folder, PYTHON to pick the base interpreter.
#
#   ensure_venv REQUIREMENTS DIR   another environment (e.g. the chart tools
#                                  in .venv-chart), same caching.

EARSHOT_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EARSHOT_REPO_DIR=$(cd "$EARSHOT_SCRIPTS_DIR/.." && pwd)

ensure_venv() {
  local req=${1:-$EARSHOT_SCRIPTS_DIR/requirements-test.txt}
  VENV=${2:-${EARSHOT_VENV:-$EARSHOT_REPO_DIR/.venv}}
  VENV_PY="$VENV/bin/python"
  local base=${PYTHON:-python3}
  [[ -f "$req" ]] || { echo "venv.sh: error: missing $req" >&2; return 1; }

  if [[ ! -x "$VENV_PY" ]]; then
    command -v "$base" >/dev/null || { echo "venv.sh: error: $base not found" >&2; return 1; }
    echo "venv.sh: creating $VENV" >&2
    "$base" -m venv "$VENV" || {
      echo "venv.sh: error: '$base -m venv $VENV' failed (on Debian: apt-get install python3-venv)" >&2
      return 1
    }
  fi

  local want have=""
  want=$(sha256sum "$req" | awk '{print $1}')
  [[ -f "$VENV/.requirements.sha256" ]] && have=$(cat "$VENV/.requirements.sha256")
  if [[ "$want" != "$have" ]]; then
    echo "venv.sh: installing $(basename "$req") into $VENV" >&2
    # llama-cpp-python compiles llama.cpp; its default -march=native build
    # crashed (SIGSEGV in llama_decode) on a CPU with AVX512-FP16, so build
    # the portable kernels. Its multimodal library (mtmd, LLAVA_BUILD) is
    # never used here (`llama_cpp` loads it only for image chat formats):
    # without it the build took 451 s on a 2-core Zen 1 VM and the
    # llama.cpp gate passed unchanged. Set CMAKE_ARGS to override.
    CMAKE_ARGS=${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF} \
      "$VENV_PY" -m pip install --disable-pip-version-check --quiet -r "$req" >&2 || {
      echo "venv.sh: error: pip install -r $req failed (see pip's message above)" >&2
      return 1
    }
    echo "$want" > "$VENV/.requirements.sha256"
  fi
  export VENV VENV_PY
}
