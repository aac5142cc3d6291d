"""Hosting the demo: every setting from the environment (a Hugging Face Space runs `python app.py` with no
arguments), the example photos it offers, --share without internet, a reverse proxy (--root-path), the README's
Space front matter, and the app started exactly as a Space starts it."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port, run_main
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from captioning import shipped
from captioning.cli import app

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "examples" / "dogs.jpg"
PASSWORD = "Sp4ce-s3cret-71"  # a login password the tests look for in every output (it must never appear)


@pytest.fixture
def clean_environment(monkeypatch):
    """No demo variable set, whatever the shell running the tests has."""
    for variable in app.ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


# --- settings from the environment --------------------------------------------------------------------------------


def test_every_setting_comes_from_its_variable_and_a_flag_wins(clean_environment, tmp_path):
    environment = {
        "CAPTIONING_MODEL": "model_hard, runs/x/best",
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": "8080",
        "GRADIO_ROOT_PATH": "/caption/",
        "CAPTIONING_AUTH": f"alice:{PASSWORD},bob:pa:ss",
        "CAPTIONING_MAX_FILE_SIZE": "2mb",
        "CAPTIONING_CONCURRENCY": "3",
        "CAPTIONING_QUEUE_SIZE": "5",
        "CAPTIONING_EXAMPLES": str(tmp_path),
    }
    for variable, value in environment.items():
        clean_environment.setenv(variable, value)
    args = app.parse_args([])
    assert args.model == ["model_hard", "runs/x/best"]
    assert (args.host, args.port, args.root_path) == ("0.0.0.0", 8080, "/caption")
    assert args.auth == [("alice", PASSWORD), ("bob", "pa:ss")]
    assert (args.max_file_size, args.concurrency, args.queue_size, args.examples) == ("2mb", 3, 5, str(tmp_path))
    flags = ["--model", "a", "--model", "b", "--auth", "carol:x", "--port", "9000", "--concurrency", "1"]
    flags += ["--root-path", "", "--examples", "none", "--max-file-size", "1gb", "--queue-size", "7"]
    given = app.parse_args(flags)  # the command line wins, a repeated flag replaces the variable's list
    assert (given.model, given.auth, given.port, given.concurrency) == (["a", "b"], [("carol", "x")], 9000, 1)
    assert (given.root_path, given.examples, given.max_file_size, given.queue_size) == ("", "none", "1gb", 7)
    assert given.host == "0.0.0.0"  # not given: still the variable's


def test_the_help_names_every_variable():
    text = " ".join(app.build_parser().format_help().split())
    for flag, variable in app.ENVIRONMENT.items():
        assert re.search(rf"{flag} .*?environment: \${variable}\b", text), f"--help names no variable for {flag}"


@pytest.mark.parametrize(
    "variable, value, reason",
    [
        ("CAPTIONING_AUTH", f"alice:{PASSWORD},{PASSWORD}", "must look like USER:PASS"),
        ("CAPTIONING_CONCURRENCY", "two", ""),
        ("CAPTIONING_QUEUE_SIZE", "0", "must be >= 1"),
        ("CAPTIONING_MAX_FILE_SIZE", "10", "kb, mb or gb"),
        ("GRADIO_SERVER_PORT", "70000", "at most 65535"),
        ("GRADIO_ROOT_PATH", "caption", "must start with /"),
        ("CAPTIONING_MODEL", " , ", "no value"),
    ],
)
def test_a_malformed_variable_stops_the_start_up_with_one_line_naming_it(
    variable, value, reason, clean_environment, capsys
):
    clean_environment.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        app.main([])
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {variable}") and reason in err
    assert PASSWORD not in err  # a secret's value is never shown, not even when it is the malformed part


# --- the example photos ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_a_missing_or_empty_examples_folder_is_one_line(folder, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    path = tmp_path / folder
    assert app.main(["--model", str(tiny_model_dir), "--examples", str(path)]) == 2
    err = capsys.readouterr().err
    expected = f"no folder of example photos at {path}" if folder == "missing" else f"{path} holds no photo"
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err


def shelf_photos(url: str) -> list[str] | None:
    """The file names of the examples shelf of the demo at url; None when it has no shelf."""
    components = httpx.get(url + "config").json()["components"]
    shelf = [c for c in components if c["props"].get("elem_id") == "examples"]
    return [sample[0]["orig_name"] for sample in shelf[0]["props"]["samples"]] if shelf else None


def test_the_served_shelf_holds_the_chosen_examples(tiny_model_dir, clean_environment, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, source in {"z_dogs.jpg": "dogs.jpg", "a_cat.webp": "cat.jpg"}.items():
        (photos / name).write_bytes((shipped.EXAMPLES_DIR / source).read_bytes())
    served = []
    on_serve = lambda url: served.append(shelf_photos(url))  # noqa: E731
    model = ["--model", str(tiny_model_dir)]
    assert run_main([*model, "--examples", str(photos)], clean_environment, tmp_path, free_port(), on_serve) == 0
    assert run_main(model, clean_environment, tmp_path, free_port(), on_serve) == 0  # not a shipped model: none
    clean_environment.setenv("CAPTIONING_EXAMPLES", str(photos))
    assert run_main([*model, "--examples", "none"], clean_environment, tmp_path, free_port(), on_serve) == 0
    assert served == [["a_cat.webp", "z_dogs.jpg"], None, None]


# --- --share without internet ---------------------------------------------------------------------------------------


def test_share_offline_is_one_line_and_the_demo_serves_locally(tiny_model_dir, monkeypatch, tmp_path, capsys):
    """No internet here: Gradio cannot fetch its tunnel program, and prints a page of advice (antivirus software,
    a manual download) in place of the link; the demo says it in one line and goes on serving locally."""
    served = []
    argv = ["--model", str(tiny_model_dir), "--share", "--auth", f"alice:{PASSWORD}"]

    def on_serve(url: str) -> None:
        client = Client(url, verbose=False, auth=("alice", PASSWORD), download_files=str(tmp_path / "downloads"))
        served.append(client.predict(handle_file(str(PHOTO)), 1, api_name="/caption")[0])
        client.close()

    assert run_main(argv, monkeypatch, tmp_path, free_port(), on_serve) == 0
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if re.search("share|antivirus|download", line, re.I)]
    assert lines == [next(line for line in err.splitlines() if line.startswith("could not create a public share"))]
    assert "needs internet" in lines[0] and "serving locally at http://127.0.0.1:" in lines[0]
    assert len(served) == 1 and served[0] and PASSWORD not in out + err


# --- behind a reverse proxy -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def reverse_proxy(prefix: str, target: str):
    """`with reverse_proxy("/demo", "http://127.0.0.1:PORT") as url:` a local HTTP proxy at url (ending in prefix/)
    that forwards every request under prefix to target with the prefix stripped, as nginx's
    `location /demo/ { proxy_pass http://127.0.0.1:PORT/; }` does, streaming both ways (the queue's event stream)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "upgrade"}
    upstream = httpx.AsyncClient(base_url=target, timeout=None)

    async def forward(request):
        path = request.url.path
        if not path.startswith(prefix + "/"):
            return Response("not under the proxied path", status_code=404)
        headers = [(k, v) for k, v in request.headers.items() if k not in hop_by_hop]
        sent = upstream.build_request(
            request.method, path[len(prefix) :], params=request.query_params, headers=headers, content=request.stream()
        )
        answer = await upstream.send(sent, stream=True)
        kept = {k: v for k, v in answer.headers.items() if k not in hop_by_hop}
        return StreamingResponse(
            answer.aiter_raw(), answer.status_code, headers=kept, background=BackgroundTask(answer.aclose)
        )

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
    proxy = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(proxy, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}{prefix}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_behind_a_reverse_proxy_the_page_and_the_api_work_under_the_root_path(
    tiny_model_dir, monkeypatch, tmp_path, capsys
):
    port = free_port()
    checks = {}

    def on_serve(local_url: str) -> None:
        with reverse_proxy("/demo", local_url.rstrip("/")) as url:
            checks["root"] = httpx.get(url + "config").json()["root"]
            page = httpx.get(url).text
            scripts = re.findall(r'src="([^"]+\.js)"', page)
            checks["scripts"] = [httpx.get(httpx.URL(url).join(src)).status_code for src in scripts]
            client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
            text, data = client.predict(handle_file(str(PHOTO)), 1, api_name="/caption")
            heatmap, _ = client.predict(0, data, api_name="/step")  # a file the app serves, fetched through the proxy
            checks["caption"], checks["heatmap"] = text, Path(heatmap).stat().st_size
            client.close()

    assert (
        run_main(["--model", str(tiny_model_dir), "--root-path", "/demo/"], monkeypatch, tmp_path, port, on_serve) == 0
    )
    assert checks["root"].endswith("/demo") and checks["root"].startswith("http://127.0.0.1:")
    assert checks["scripts"] and set(checks["scripts"]) == {200}
    assert checks["caption"] and checks["heatmap"] > 0


# --- the Hugging Face Space ------------------------------------------------------------------------------------------


def test_readme_front_matter_is_a_valid_space_configuration():
    """README.md starts with the Space's configuration: the fields a Space reads, an sdk_version that
    requirements.txt allows, and an app file that exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with a '---' front matter block"
    config = yaml.safe_load(match.group(1))
    assert {"title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "app_file", "python_version"} <= set(config)
    colours = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert config["sdk"] == "gradio" and {config["colorFrom"], config["colorTo"]} <= colours
    assert (ROOT / config["app_file"]).is_file()
    gradio = next(
        Requirement(line) for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("gradio")
    )
    assert gradio.specifier.contains(str(config["sdk_version"])), f"sdk_version is outside {gradio}"
    requires_python = re.search(r'requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert SpecifierSet(requires_python).contains(str(config["python_version"]))


def start_as_a_space(environment: dict[str, str], temp_dir: Path) -> tuple[subprocess.Popen, queue.Queue]:
    """`python app.py` with no arguments and a Space's environment plus `environment`; its output lines arrive on
    the queue (stdout and stderr together). Gradio's temporary folder is its own, as in a Space's container: demos
    sharing one delete each other's copies of the same example photos when they close."""
    env = {k: v for k, v in os.environ.items() if k not in app.ENVIRONMENT.values() and k != "GRADIO_EXAMPLES_CACHE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", SPACE_ID="someone/show-attend-tell", **environment)
    env["GRADIO_TEMP_DIR"] = str(temp_dir)
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines


def wait_until_serving(process: subprocess.Popen, lines: queue.Queue, output: list[str], timeout: float = 600) -> str:
    """The local URL once the app says it serves; every line read so far is added to output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, f"the app exited ({process.returncode}):\n{''.join(output)}"
            continue
        output.append(line)
        if match := re.search(r"Running on local URL:\s+(\S+)", line):
            return match.group(1)
    raise AssertionError(f"the app did not start in {timeout} s:\n{''.join(output)}")


def stop(process: subprocess.Popen, lines: queue.Queue, output: list[str]) -> None:
    process.terminate()
    process.wait(timeout=30)
    time.sleep(0.2)
    while not lines.empty():
        output.append(lines.get())


@pytest.mark.slow
def test_started_as_a_space_starts_it_the_login_is_required_and_a_variable_picks_the_model(tmp_path):
    """Exactly as a Space starts it (the shipped models, their examples captioned at start-up), behind
    CAPTIONING_AUTH; then with CAPTIONING_MODEL=model_hard (and no examples, for a shorter start)."""
    output = []
    port = str(free_port())
    space = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": port, "CAPTIONING_AUTH": f"visitor:{PASSWORD}"}
    process, lines = start_as_a_space(space, tmp_path / "gradio")
    try:
        url = wait_until_serving(process, lines, output)
        assert url.startswith(f"http://127.0.0.1:{port}")
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)
        assert httpx.post(url + "gradio_api/queue/join", json={}).status_code == 401
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, verbose=False, auth=("visitor", "wrong"))
        client = Client(url, verbose=False, auth=("visitor", PASSWORD), download_files=str(tmp_path / "downloads"))
        text, data = client.predict(handle_file(str(PHOTO)), 3, api_name="/caption")
        assert text and (data["model"], data["attention"]) == ("model", "soft")
        assert client.predict(handle_file(str(PHOTO)), 3, "model_hard", api_name="/caption")[1]["attention"] == "hard"
        client.close()
    finally:
        stop(process, lines, output)

    hard_only = {**space, "CAPTIONING_MODEL": "model_hard", "CAPTIONING_EXAMPLES": "none"}
    process, lines = start_as_a_space(hard_only, tmp_path / "gradio")
    try:
        url = wait_until_serving(process, lines, output)
        client = Client(url, verbose=False, auth=("visitor", PASSWORD), download_files=str(tmp_path / "downloads"))
        caption = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/caption"]
        model = next(p for p in caption["parameters"] if p["label"] == "Model")
        assert model["parameter_default"] == "model_hard"
        with pytest.raises(AppError, match=r"is not in the list of choices: \['model_hard'\]"):
            client.predict(handle_file(str(PHOTO)), 3, "model", api_name="/caption")
        text, data = client.predict(handle_file(str(PHOTO)), 3, api_name="/caption")
        assert text and (data["model"], data["attention"]) == ("model_hard", "hard")
        client.close()
    finally:
        stop(process, lines, output)
    assert PASSWORD not in "".join(output)


def test_the_docs_state_how_long_uploads_are_kept_and_their_demo_commands_parse(clean_environment):
    """The README's "Host it" and docs/demo.md state the deletion time that DELETE_CACHE sets, and every
    `python app.py ...` line in them is a valid command line."""
    in_words = {1800: "30 minutes", 3600: "an hour"}  # a new DELETE_CACHE needs its words here and in the docs
    every, age = app.DELETE_CACHE
    stated = f"once they are {in_words[age]} old (checked every {in_words[every]})"
    readme, demo_md = ((ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/demo.md"))
    assert stated in " ".join(readme.split()) and stated.replace("they are", "it is") in " ".join(demo_md.split())
    commands = re.findall(r"^(?:python app\.py|captioning-app)(.*?)(?:\s+#.*)?$", readme + demo_md, re.M)
    assert len(commands) > 10
    for command in commands:
        app.parse_args(command.split())  # exits on an unknown flag or a malformed value
