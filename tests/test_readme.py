"""The README's claims, checked: its Python API snippet runs as written, and its results tables match results/*.json.

The results files are what `python -m captioning.cli.evaluate --json-out FILE` writes (docs/training.md, "Results
files"); the README shows their metrics in percent with one decimal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results"
SHIPPED = {"model": "assets/model", "model_hard": "assets/model_hard"}  # results file stem -> model directory
BEAMS = (1, 3, 5)
COLUMNS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def readme_section(heading: str) -> str:
    """The text under '## heading' up to the next '## ' heading."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match[1]


def python_api_snippet() -> str:
    """The ```python block under '## Python API', verbatim."""
    match = re.search(r"```python\n(.*?)```", readme_section("Python API"), re.S)
    assert match, "README.md's Python API section has no ```python block"
    return match[1]


def results_tables() -> dict[str, dict[int, dict[str, str]]]:
    """{model directory: {beam: {column: figure as written}}} for each table under '## Results' whose
    '### ...' heading names a shipped model directory in backticks."""
    tables = {}
    for block in re.split(r"^### ", readme_section("Results"), flags=re.M)[1:]:
        named = re.search(r"`(assets/[\w-]+)`", block.splitlines()[0])
        rows = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in block.splitlines()
            if line.startswith("|")
        ]
        if not named or not rows:
            continue
        header, body = rows[0], rows[2:]  # rows[1] is the |---| line
        assert tuple(header) == ("beam", *COLUMNS), f"{named[1]}: unexpected columns {header}"
        tables[named[1]] = {int(row[0]): dict(zip(COLUMNS, row[1:])) for row in body}
    return tables


def percent(fraction: float) -> str:
    """A metric as the README shows it: percent, one decimal."""
    return f"{100 * fraction:.1f}"


def metric(metrics: dict[str, float], column: str) -> float:
    """A README column's value in a results file ("ROUGE-L" may also be spelt "ROUGE_L")."""
    for key in (column, column.replace("-", "_")):
        if key in metrics:
            return metrics[key]
    raise KeyError(f"no {column} in the results file's metrics {sorted(metrics)}")


def table_row(beam: int, metrics: dict[str, float]) -> str:
    """The README row the results file calls for (printed on a mismatch, ready to paste)."""
    return "| " + " | ".join([str(beam)] + [percent(metric(metrics, c)) for c in COLUMNS]) + " |"


def test_readme_has_a_results_table_per_shipped_model_and_beam():
    tables = results_tables()
    assert set(tables) == set(SHIPPED.values()), sorted(tables)
    for model, rows in tables.items():
        assert tuple(rows) == BEAMS, f"{model}: beams {tuple(rows)}"
        for beam, row in rows.items():
            assert all(re.fullmatch(r"\d+\.\d", figure) for figure in row.values()), f"{model} beam {beam}: {row}"


def test_readme_results_match_the_results_files():
    tables, wrong = results_tables(), []
    for stem, model in SHIPPED.items():
        for beam in BEAMS:
            path = RESULTS_DIR / f"{stem}_beam{beam}.json"
            assert path.is_file(), f"{path.relative_to(REPO)} is missing"
            run = json.loads(path.read_text())
            assert Path(run["model"]).name == Path(model).name, (path.name, run["model"])
            assert (run["split"], run["beam_size"], run["expected_context"]) == ("VAL", beam, False), path.name
            expected = table_row(beam, run)
            written = "| " + " | ".join([str(beam)] + [tables[model][beam][c] for c in COLUMNS]) + " |"
            if written != expected:
                wrong.append(f"{model} beam {beam}: README {written}, {path.name} {expected}")
    assert not wrong, "README results differ from results/*.json:\n" + "\n".join(wrong)


@pytest.mark.slow
def test_readme_python_api_runs_verbatim(tmp_path):
    """From a directory that is not the repository, with a photo there as photo.jpg. PYTHONPATH stands in for
    `pip install -e .` (CI installs requirements-dev.txt only)."""
    shutil.copy(REPO / "assets" / "examples" / "dogs.jpg", tmp_path / "photo.jpg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", python_api_snippet()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text, score = done.stdout.strip().rsplit(" ", 1)
    assert len(text.split()) >= 2 and float(score) < 0, done.stdout
