#!/usr/bin/env bash
# Refresh constraints.txt to today's releases: install everything ("all" extras) into a scratch
# venv without constraints, exactly as scripts/setup.sh does, and write the versions it got.
# Usage: bash scripts/lock.sh   then run the tests (bash .ci/run) and commit constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=.venv-lock
rm -rf "${scratch}"
PARROT_VENV="${scratch}" PARROT_CONSTRAINTS=none bash scripts/setup.sh all
{
    echo "# Exact versions of a full install (bash scripts/setup.sh all) that CI tested."
    echo "# Refresh with: bash scripts/lock.sh"
    # The torch line drops its local tag (+cpu here) so a machine without the CPU wheel still
    # resolves the same release.
    "${scratch}/bin/python" -m pip freeze --all --exclude-editable \
        | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
        | LC_ALL=C sort -f
} > constraints.txt
rm -rf "${scratch}"
echo "parrot: constraints.txt written ($(grep -vc '^#' constraints.txt) packages)"
