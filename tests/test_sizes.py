"""Sizes a newcomer can read: no module over 500 lines, no function over 60, a thin tunnel.

Issue 14's acceptance, kept by the suite so a growing module is split when it grows, not
found later. Migrations are generated and excluded.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("portal", "tiers", "streaming")
MODULE_LINES, FUNCTION_LINES, TUNNEL_CONSUMER_LINES = 500, 60, 250


def _modules() -> list[Path]:
    found = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    assert len(found) > 100  # the walk found the code
    return found


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_500_lines():
    assert [str(p.relative_to(ROOT)) for p in _modules() if _lines(p) > MODULE_LINES] == []


def test_no_function_is_over_60_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_the_tunnel_consumer_is_a_thin_relay():
    assert _lines(ROOT / "streaming" / "desktop" / "consumer.py") < TUNNEL_CONSUMER_LINES
