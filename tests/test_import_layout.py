"""No file or folder of the repository is importable under a top-level name that an installed
distribution uses, whether Python starts from the repository root (`python -m pytest`) or from
a script's folder (`python benchmarks/engine.py`), and every module of the project imports there.

Each check runs in a fresh interpreter whose working directory is that folder, so the folder is
first on `sys.path` exactly as it is for a user's command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The folders Python puts first on sys.path for the project's own commands: the root (python -m,
# pytest's rootdir) and the folders of runnable scripts and tests.
START_FOLDERS = ["", "benchmarks", "cookbook", "tests"]

# Runs in the subprocess: prints {"shadowed": [...], "failed": [...], "stray": [...]}.
PROBE = r"""
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
from pathlib import Path

root = Path(sys.argv[1]).resolve()
installed = Path(sys.prefix).resolve()  # a venv inside the repository is not the repository
own = ("parrot_integrations", "parrot_server", "parrot_kernels")
# Adapters whose framework is an optional extra: imported only where the framework is installed.
optional = {"parrot_integrations.langchain": "langchain_core",
            "parrot_integrations.llamaindex": "llama_index.core"}

def inside(path):
    try:
        if path is None or not Path(path).is_absolute():  # torch.ops and kin: no real file
            return False
        path = Path(path).resolve()
        return path.is_relative_to(root) and not path.is_relative_to(installed)
    except (OSError, ValueError):
        return False

shadowed = []
for name, dists in sorted(importlib.metadata.packages_distributions().items()):
    if name in own or not name.isidentifier():
        continue
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        continue
    if spec is None:
        continue
    places = [spec.origin, *(spec.submodule_search_locations or [])]
    hits = [str(p) for p in places if inside(p)]
    if hits:
        shadowed.append(f"{name} (of {', '.join(sorted(set(dists)))}) resolves to {hits[0]}")

def skipped(module):
    for prefix, needs in optional.items():
        if module == prefix or module.startswith(prefix + "."):
            try:
                return importlib.util.find_spec(needs) is None
            except ModuleNotFoundError:
                return True
    return False

failed = []
for top in own:
    try:
        package = importlib.import_module(top)
    except Exception as exc:
        failed.append(f"{top}: {type(exc).__name__}: {exc}")
        continue
    names = [m.name for m in pkgutil.walk_packages(package.__path__, top + ".", onerror=lambda n: None)]
    for module in names:
        if skipped(module):
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:
            failed.append(f"{module}: {type(exc).__name__}: {exc}")

stray = sorted(
    f"{name} from {getattr(mod, '__file__', None)}"
    for name, mod in list(sys.modules.items())
    if name.split(".")[0] not in own and inside(getattr(mod, "__file__", None))
)
print(json.dumps({"shadowed": shadowed, "failed": failed, "stray": stray}))
"""


@pytest.mark.parametrize("folder", START_FOLDERS, ids=lambda f: f or "root")
def test_no_shadowed_module_and_every_module_imports(folder: str) -> None:
    cwd = ROOT / folder
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    where = f"started in {cwd}"
    assert not found["shadowed"], (
        f"{where}: the repository shadows installed modules: {found['shadowed']}"
    )
    assert not found["failed"], f"{where}: project modules failed to import: {found['failed']}"
    assert not found["stray"], (
        f"{where}: modules were imported from the repository under names that are not the "
        f"project's packages: {found['stray']}"
    )
