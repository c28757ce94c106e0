"""The import direction of DESIGN.md, as the contracts in pyproject.toml ([tool.importlinter])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    # The venv's own script, so the check runs against the installed pins wherever pytest runs.
    lint_imports = Path(sys.executable).parent / "lint-imports"
    # --no-cache: the whole graph takes well under a second, and no cache folder is left behind.
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
