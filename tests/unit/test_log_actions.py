"""Every log call in the library carries a stable ``action`` key (DESIGN §9)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "offload"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def log_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name | ast.Attribute)
                and "log" in ast.unparse(node.func.value).lower()
            ):
                calls.append((str(path.relative_to(SRC)), node.lineno, node))
    return calls


def has_action(call: ast.Call) -> bool:
    for keyword in call.keywords:
        if keyword.arg == "extra":
            value = keyword.value
            if isinstance(value, ast.Dict):
                return any(isinstance(k, ast.Constant) and k.value == "action" for k in value.keys)
            return isinstance(value, ast.Name)  # built beforehand; checked by its own test
    return False


class TestLogCalls:
    def test_there_are_log_calls_to_check(self) -> None:
        assert len(log_calls()) > 20

    def test_every_log_call_has_an_action(self) -> None:
        """A log call whose ``extra`` has no literal ``action`` key is listed here."""
        missing = [f"{path}:{line}" for path, line, call in log_calls() if not has_action(call)]
        assert [] == missing
