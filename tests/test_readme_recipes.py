"""The README's commands run from any directory after `pip install -e .`: the own-captions recipe and a caption
command line, run as subprocesses from a scratch directory that holds only the user's files. The recipe's
commands are run as written plus flags that shrink the work (argparse keeps the last value of a flag)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_captions_csv
from test_cli_quickstart import quickstart_calls
from test_readme import readme_section

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHRINK = {  # per command, flags appended to make the recipe a seconds-long run
    "captioning-prepare": ["--image-size", "32"],
    "captioning.cli.features": ["--backbone", "tf_efficientnet_lite0", "--input-size", "64", "--threads", "1"],
    "captioning-train": [
        *("--embed-dim", "16", "--attention-dim", "16", "--decoder-dim", "16", "--epochs", "1"),
        *("--max-steps-per-epoch", "2", "--threads", "1", "--device", "cpu"),
    ],
    "captioning-app": ["--help"],  # the server is not started here
}


def bash_calls(heading: str) -> list[list[str]]:
    """The first ```bash block under '## heading' as argv lists (continuations joined, comments dropped, variables
    and for loops expanded)."""
    block = re.search(r"```bash\n(.*?)```", readme_section(heading), re.S)[1]
    return quickstart_calls([line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()])


def run(call: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A README command in `cwd`, with this checkout's package first on the path (CI installs it instead)."""
    argv = [sys.executable, *call[1:]] if call[0] == "python" else call
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """A folder outside the repository with what the recipe starts from: captions.csv and my_images/."""
    write_captions_csv(tmp_path, seed=6)
    return tmp_path


def test_own_captions_recipe_runs_from_another_directory(user_dir):
    if shutil.which("captioning-prepare") is None:
        pytest.skip("the captioning-* console scripts are not installed (pip install -e .)")
    calls = bash_calls("Train on your own captions")
    assert calls and not any(
        call[:2] == ["python", "prepare_data.py"] or call[:2] == ["python", "train.py"] for call in calls
    )
    for call in calls:
        tool = call[2] if call[:2] == ["python", "-m"] else call[0]
        done = run(call + SHRINK.get(tool, []), user_dir)
        assert done.returncode == 0, (call, done.stderr[-2000:])
    assert (user_dir / "runs" / "mine" / "best" / "model.safetensors").is_file()


def test_caption_command_line_with_a_shipped_model_name(tmp_path):
    lines = [call for call in bash_calls("Command line") if "--model" in call]
    assert lines, "README's command-line examples name no --model"
    shutil.copy(REPO / "assets" / "examples" / "dogs.jpg", tmp_path / "photo.jpg")
    for call in lines:
        done = run(call, tmp_path)
        assert done.returncode == 0 and done.stdout.startswith("photo.jpg: "), (call, done.stderr[-2000:])
