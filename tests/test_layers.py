"""The layers are kept by import-linter (pyproject.toml), and a reverse import breaks them.

Each case copies the packages, adds one import that goes the wrong way and runs the real
``lint-imports`` on the copy with the project's own contracts: it must fail, naming the
layers. ``make test`` runs the same command on the tree before the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("portal", "tiers", "streaming", "demo")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_code_keeps_its_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "reverse_import", "complaint"), [
    ("tiers/decision.py", "from streaming.proxy import app", "tiers is not allowed to import streaming"),
    ("portal/audit/chain.py", "from portal.auditor import views",
     "portal.audit is not allowed to import portal.auditor"),
    ("portal/accounts/roles.py", "from tiers import models", "portal.accounts is not allowed to import tiers"),
    ("streaming/desktop/views.py", "from portal import urls", "streaming is not allowed to import portal.urls"),
    ("tiers/models.py", "from demo import catalog", "tiers.models -> demo.catalog"),
    ("tiers/decision.py", "from django.conf import settings", "tiers.decision -> django"),
])
def test_an_import_against_the_layers_makes_lint_imports_fail(tmp_path, module, reverse_import, complaint):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint_imports(tmp_path).returncode == 0, "the copy keeps the contracts before the change"

    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{reverse_import}  # noqa\n")
    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert complaint in " ".join(result.stdout.split()), result.stdout
