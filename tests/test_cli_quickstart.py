"""The README's quickstart block, run as written (minus `pip install` and the server) in a scratch directory.

The commands run in this process (each tool's main(argv)), so the test pays for the work and not for six Python
start-ups; the block's shell (a variable, a for loop, line continuations) is interpreted by quickstart_calls."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from conftest import TorchThreads

REPO = Path(__file__).resolve().parents[1]


def quickstart_lines() -> list[str]:
    """The bash block under '## Quickstart (30 seconds, CPU)', continuation lines joined, comments dropped."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quickstart (30 seconds, CPU)") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]


def quickstart_calls(lines: list[str]) -> list[list[str]]:
    """The commands as argv lists, with NAME=value variables and `for X in ...; do ... done` loops expanded."""
    variables, calls, loop = {}, [], None
    for line in filter(None, lines):
        if match := re.fullmatch(r"(\w+)=(\S+)", line):
            variables[match[1]] = match[2]
        elif match := re.fullmatch(r"for (\w+) in (.+); do", line):
            loop = (match[1], match[2].split(), [])
        elif line == "done":
            name, values, body = loop
            calls += [shlex.split(command.replace(f"${name}", value)) for value in values for command in body]
            loop = None
        elif loop is not None:
            loop[2].append(line)
        else:
            calls.append(shlex.split(line))
    return [[re.sub(r"\$(\w+)", lambda m: variables[m[1]], word) for word in call] for call in calls]


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, monkeypatch, capsys):
    from captioning.cli import caption, evaluate, features, prepare, train

    tools = {
        ("prepare_data.py",): prepare.main,
        ("-m", "captioning.cli.prepare"): prepare.main,
        ("-m", "captioning.cli.features"): features.main,
        ("train.py",): train.main,
        ("-m", "captioning.cli.train"): train.main,
        ("-m", "captioning.cli.evaluate"): evaluate.main,
        ("-m", "captioning.cli.caption"): caption.main,
        ("captioning-prepare",): prepare.main,
        ("captioning-features",): features.main,
        ("captioning-train",): train.main,
        ("captioning-evaluate",): evaluate.main,
        ("captioning-caption",): caption.main,
    }
    calls = quickstart_calls(quickstart_lines())
    assert calls[0][:3] == ["pip", "install", "-e"] and calls[-1] == ["captioning-app", "--model", "runs/quick/best"]
    monkeypatch.chdir(tmp_path)
    with TorchThreads():  # the tools' --threads is process state: restored for the tests that follow
        for call in calls[1:-1]:
            python = call[0] == "python"  # python -m MODULE | python SCRIPT.py, or a console script
            prefix = (tuple(call[1:3]) if call[1] == "-m" else (call[1],)) if python else (call[0],)
            assert tools[prefix](call[python + len(prefix) :]) == 0, call
    out = capsys.readouterr().out
    assert re.search(r"^BLEU-1 [\d.]+ \| BLEU-2 .* BLEU-4 [\d.]+ .*\(10 images, beam 3\)$", out, re.M), out[-2000:]
    caption_line = re.search(r"synthetic_00000\.png: (.+)$", out, re.M)
    from captioning.synthetic import SHAPES

    assert caption_line and caption_line[1].split()[-1] in SHAPES, out[-2000:]
    assert (tmp_path / "runs" / "quick" / "best" / "model.safetensors").is_file() and os.getcwd() == str(tmp_path)
