#!/usr/bin/env bash
# Print a Python >= 3.12 interpreter (Django 6 needs it): PATH first, then pyenv's versions.
for cand in python3.13 python3.12 python3; do
  if p=$(command -v "$cand" 2>/dev/null) && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    echo "$p"; exit 0
  fi
done
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
  [ -x "$p" ] && { echo "$p"; exit 0; }
done
echo "no Python 3.12+ found: install python3.12 (Django 6 needs it)" >&2
exit 1
