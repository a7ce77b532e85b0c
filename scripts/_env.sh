# Shared by scripts/up and scripts/test: make sure uv exists and the environment matches uv.lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v uv >/dev/null 2>&1; then
    echo "installing uv (the Python package manager) for this user..." >&2
    python3 -m pip install --quiet --user uv 2>/dev/null \
      || python3 -m pip install --quiet --user --break-system-packages uv \
      || python3 -m pip install --quiet uv
  fi
fi
uv sync --frozen --quiet
