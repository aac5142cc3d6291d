"""The README's quickstart block, run as written (minus `pip install` and the server) in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from captioning.synthetic import SHAPES

REPO = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    """The bash block under '## Quickstart (30 seconds, CPU)', continuation lines joined."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quickstart (30 seconds, CPU)"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return block.replace("\\\n", " ").splitlines()


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path):
    commands = quickstart_commands()
    assert commands[0].startswith("pip install -e .") and commands[-1] == "python app.py --model runs/quick/best"
    script = "\n".join(["set -euo pipefail", *commands[1:-1]])
    for script_name in ("prepare_data.py", "train.py"):
        script = script.replace(f"python {script_name}", f"{sys.executable} {REPO / script_name}")
    script = script.replace("python -m", f"{sys.executable} -m")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^BLEU-1 [\d.]+ \| BLEU-2 .* BLEU-4 [\d.]+ .*\(10 images, beam 3\)$", result.stdout, re.M)
    caption = re.search(r"synthetic_00000\.png: (.+)$", result.stdout, re.M)
    assert caption and caption.group(1).split()[-1] in set(SHAPES), result.stdout[-2000:]
    assert (tmp_path / "runs" / "quick" / "best" / "model.safetensors").is_file()
