"""The demo keeps serving under bad input and load: hostile or odd uploads, tampered /step data, many clients, a full
queue, and --share / --auth. The app runs in-process with the tiny random model and is driven through gradio_client
(and raw HTTP where the client would hide what the server does)."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import httpx
import numpy as np
import pytest
from conftest import run_main
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError
from gradio_client.utils import QueueError
from PIL import Image, ImageFile

from captioning import handlers, payload
from captioning.cli import app, launch
from captioning.model import Captioner
from captioning.preprocess import MAX_IMAGE_PIXELS, Preprocessing, load_image, preprocess_image

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "assets" / "examples" / "cat.jpg"
MAX_FILE_SIZE = 200 * 1024  # the test server's --max-file-size


@pytest.fixture(scope="module")
def captioner(tiny_model_dir) -> Captioner:
    return Captioner.load(tiny_model_dir)


@pytest.fixture(scope="module")
def server(captioner, tmp_path_factory, launch_demo):
    """One demo for every bad-upload / mode / load test: concurrency 2, queue 32, uploads up to 200 KB."""
    demo = app.build_demo(captioner, examples=[], cache_examples=False)
    demo.queue(max_size=32)
    url = launch_demo(demo, max_file_size=MAX_FILE_SIZE)
    downloads = tmp_path_factory.mktemp("downloads")
    client = Client(url, verbose=False, download_files=str(downloads))
    try:
        yield SimpleNamespace(
            url=url,
            client=client,
            downloads=downloads,
            expected=captioner.caption(load_image(GOOD), beam_size=1)[0].text,
        )
    finally:
        client.close()
        demo.close()


def caption(client: Client, path: Path, beam: int = 1) -> tuple:
    """(text, per-word data) from /caption."""
    return client.predict(handle_file(str(path)), beam, api_name="/caption")


def assert_still_serves(server) -> None:
    assert caption(server.client, GOOD)[0] == server.expected


def shown(data: dict) -> np.ndarray:
    """The display image carried in the hidden JSON, as int (H, W, 3)."""
    return np.asarray(payload.decode_image(data["image"])).astype(int)


def vm_rss_mb() -> float:
    """Resident memory of this process (the server runs in it), from /proc (psutil is not a dependency)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# ----------------------------------------------------------------------------------------------------------------
# test images


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height, compressed row by row: a few KB of file, width*height bytes
    once Pillow decodes it (it stores 1-bit pixels in bytes). Never materialised here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    rows = b"".join(packer.compress(row * 1000) for _ in range(height // 1000))
    rows += packer.compress(row * (height % 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def picture(width: int = 96, height: int = 64) -> Image.Image:
    """A small 'photo' with 5 flat colours (so palette images are exact): red top, blue bottom, green box, ..."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)  # (H, W, 3)
    pixels[: height // 2] = (220, 30, 30)
    pixels[height // 2 :] = (30, 40, 200)
    pixels[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (40, 190, 60)
    pixels[:6, :] = (250, 250, 250)
    pixels[-6:, :] = (10, 10, 10)
    return Image.fromarray(pixels)


def on_white(image: Image.Image) -> Image.Image:
    """What an image with alpha looks like flattened onto white (to_rgb's rule), as RGB."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")


def with_alpha(image: Image.Image) -> Image.Image:
    """image plus an alpha channel: opaque, except a fully transparent left strip and a half-transparent right one."""
    alpha = np.full((image.height, image.width), 255, dtype=np.uint8)  # (H, W)
    alpha[:, :12] = 0
    alpha[:, -12:] = 128
    out = image.copy()
    out.putalpha(Image.fromarray(alpha))
    return out


def mode_case(name: str) -> tuple[Image.Image, str, Image.Image]:
    """(image in that mode, file format that keeps it, the same picture as 8-bit RGB)."""
    rgb, grey = picture(), picture().convert("L")
    sixteen = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # I;16, full 16-bit range
    cases = {
        "RGBA": lambda: (with_alpha(rgb), "PNG", on_white(with_alpha(rgb))),
        "P": lambda: (rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG", rgb),
        "P-transparent": lambda: (transparent_palette(rgb), "GIF", on_white(transparent_palette(rgb))),
        "LA": lambda: (with_alpha(grey), "PNG", on_white(with_alpha(grey))),
        "CMYK": lambda: (rgb.convert("CMYK"), "TIFF", rgb),
        "I;16": lambda: (sixteen, "PNG", grey.convert("RGB")),
        "I;16-tiff": lambda: (sixteen, "TIFF", grey.convert("RGB")),
        "L": lambda: (grey, "PNG", grey.convert("RGB")),
        "RGB-webp": lambda: (rgb, "WEBP", rgb),
        "RGB-bmp": lambda: (rgb, "BMP", rgb),
    }
    return cases[name]()


def transparent_palette(image: Image.Image) -> Image.Image:
    """Palette image in which the green box's palette entry is transparent (GIF-style transparency)."""
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = palette.getpixel((image.width // 2, image.height // 2))
    return palette


MODES = ["RGBA", "P", "P-transparent", "LA", "CMYK", "I;16", "I;16-tiff", "L", "RGB-webp", "RGB-bmp"]


def save(image: Image.Image, path: Path, fmt: str, **kwargs) -> Path:
    extra = {"lossless": True} if fmt == "WEBP" else {}
    image.save(path, format=fmt, **extra, **kwargs)
    return path


# ----------------------------------------------------------------------------------------------------------------
# bad uploads: a friendly message, then the next request is served


def bad_upload(kind: str, directory: Path) -> Path:
    if kind == "text-named-jpg":
        (path := directory / "notes.jpg").write_text("this is a shopping list, not a photo\n" * 20)
    elif kind == "text-named-png":
        (path := directory / "notes.png").write_bytes(b"#!/bin/sh\necho not an image\n")
    elif kind == "empty-file":
        (path := directory / "empty.jpg").write_bytes(b"")
    elif kind == "truncated-jpeg":
        (path := directory / "half.jpg").write_bytes(GOOD.read_bytes()[: GOOD.stat().st_size // 2])
    elif kind == "unsupported-format":  # a real image, but PPM is not among the upload decoders
        path = save(picture(), directory / "photo.ppm", "PPM")
    elif kind == "bomb-20000x20000":  # refused by Pillow's own header check (> 2x its limit) ...
        (path := directory / "bomb.png").write_bytes(png_bomb(20_000, 20_000))
    elif kind == "bomb-9000x9000":  # ... and by ours (81 Mpx: over 64 Mpx, under Pillow's limit)
        (path := directory / "big.png").write_bytes(png_bomb(9_000, 9_000))
    return path


BAD_UPLOADS = {
    "text-named-jpg": "the file is not a JPEG, PNG, GIF, WebP, BMP or TIFF image",
    "text-named-png": "the file is not a JPEG, PNG, GIF, WebP, BMP or TIFF image",
    "empty-file": "the file is not a JPEG, PNG",
    "truncated-jpeg": "the file looks damaged or incomplete",
    "unsupported-format": "the file is not a JPEG, PNG",
    "bomb-20000x20000": "over the 64-megapixel limit",
    "bomb-9000x9000": "it is 9000x9000 pixels, over the 64-megapixel limit",
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_upload_is_a_friendly_error_and_the_server_keeps_serving(server, kind, tmp_path):
    path = bad_upload(kind, tmp_path)
    decoded = []  # sizes of every image Pillow decodes meanwhile (the server runs in this process)
    real_load = ImageFile.ImageFile.load

    def spy_load(image):
        decoded.append(image.size)
        return real_load(image)

    with mock.patch.object(ImageFile.ImageFile, "load", spy_load):
        with pytest.raises(AppError) as error:
            caption(server.client, path)
    message = str(error.value)
    assert message.startswith("Could not read this image: ") and BAD_UPLOADS[kind] in message
    assert "Traceback" not in message and "Error" not in message.split(":", 1)[1]  # no exception names either
    assert all(w * h <= MAX_IMAGE_PIXELS for w, h in decoded)  # bombs are refused from the header, never decoded
    assert_still_serves(server)


def test_upload_over_the_max_file_size_is_refused(server, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    big = save(Image.fromarray(noise), tmp_path / "noise.png", "PNG")
    assert big.stat().st_size > MAX_FILE_SIZE
    with pytest.raises(ValueError, match="exceeds the maximum file size of 204800 bytes"):  # gradio_client checks
        caption(server.client, big)
    with big.open("rb") as file:  # a client that does not check: the server refuses the upload itself
        response = httpx.post(server.url + "gradio_api/upload", files={"files": ("noise.png", file, "image/png")})
    assert response.status_code == 413 and "maximum allowed size of 204800 bytes" in response.text
    assert_still_serves(server)


def test_bomb_inlined_as_a_data_url_is_refused_too(server):
    payload = base64.b64encode(png_bomb(9_000, 9_000)).decode("ascii")
    image = {"url": "data:image/png;base64," + payload, "path": None, "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(AppError, match="9000x9000 pixels, over the 64-megapixel limit"):
        server.client.predict(image, 1, api_name="/caption")
    assert_still_serves(server)


def test_tampered_step_data_is_a_friendly_error(server):
    data = caption(server.client, GOOD)[-1]
    big = io.BytesIO()
    Image.new("RGB", (2000, 1500)).save(big, format="PNG")  # /step only redraws display-size images
    tampered = [
        {**data, "image": "data:image/png;base64," + base64.b64encode(big.getvalue()).decode("ascii")},
        {**data, "image": "data:image/jpeg;base64,bm90IGFuIGltYWdl"},  # "not an image"
        {**data, "alphas": [[1.0, 2.0, 3.0]] * len(data["words"])},  # 1-D grids
        {**data, "alphas": []},
        {**data, "words": data["words"], "image": 42},
        {**data, "attention": "sideways"},  # neither soft nor hard
    ]
    for bad in tampered:
        with pytest.raises(AppError, match="word data is damaged or incomplete"):
            server.client.predict(0, bad, api_name="/step")
    heatmap, chips = server.client.predict(1, data, api_name="/step")  # the genuine data still works
    assert chips[1]["class_or_confidence"] == handlers.CURRENT and Image.open(heatmap).size == load_image(GOOD).size


# ----------------------------------------------------------------------------------------------------------------
# odd but valid images: captioned like the same picture in RGB


def test_one_pixel_image_is_captioned(server, captioner, tmp_path):
    path = save(Image.new("RGB", (1, 1), (200, 120, 40)), tmp_path / "dot.png", "PNG")
    text, data = caption(server.client, path)
    assert text and text == captioner.caption(Image.new("RGB", (1, 1), (200, 120, 40)), beam_size=1)[0].text
    assert shown(data).shape == (1, 1, 3) and len(data["alphas"]) == len(data["words"])
    assert Image.open(server.client.predict(0, data, api_name="/step")[0]).size == (1, 1)


@pytest.mark.parametrize("name", MODES)
def test_preprocessing_matches_the_same_picture_in_rgb(name, tmp_path):
    image, fmt, reference = mode_case(name)
    prep = Preprocessing()  # the default 256 -> 448 path
    expected = preprocess_image(reference, prep)  # (1, 3, 448, 448)
    assert image.mode != "RGB" or fmt in ("WEBP", "BMP")
    np.testing.assert_allclose(preprocess_image(image, prep), expected, atol=0.01)  # in memory
    with Image.open(save(image, tmp_path / f"picture.{fmt.lower()}", fmt)) as stored:  # and through a file
        if name.startswith("I;16"):
            assert stored.mode.startswith("I")  # still 16-bit when read back
        np.testing.assert_allclose(preprocess_image(stored, prep), expected, atol=0.01)
    np.testing.assert_allclose(
        preprocess_image(load_image(tmp_path / f"picture.{fmt.lower()}"), prep), expected, atol=0.01
    )


@pytest.mark.parametrize("name", MODES)
def test_image_modes_are_captioned_like_rgb(server, captioner, name, tmp_path):
    image, fmt, reference = mode_case(name)
    path = save(image, tmp_path / f"picture.{fmt.lower()}", fmt)
    text, data = caption(server.client, path)
    assert text and text == captioner.caption(reference, beam_size=1)[0].text
    assert shown(data).shape[:2] == (reference.height, reference.width)
    assert np.abs(shown(data) - np.asarray(reference).astype(int)).mean() < 6  # display copy (JPEG q80 in the JSON)


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_photo_is_captioned_and_shown_upright(server, orientation, stored_as, tmp_path):
    upright = picture(120, 80)  # landscape, red top half, blue bottom half
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: the camera stored the pixels turned; viewers rotate them back
    path = tmp_path / f"rotated-{orientation}.jpg"
    upright.transpose(stored_as).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.size == (80, 120)  # stored portrait
    text, data = caption(server.client, path)
    image = shown(data)  # (H, W, 3)
    assert text and image.shape == (80, 120, 3)
    top, bottom = image[10:35].reshape(-1, 3).mean(axis=0), image[45:70].reshape(-1, 3).mean(axis=0)
    assert top[0] > top[2] + 80 and bottom[2] > bottom[0] + 80  # red stays on top: shown upright


def test_animated_gif_uses_the_first_frame(server, captioner, tmp_path):
    frames = [Image.new("RGB", (64, 48), color) for color in ((220, 20, 20), (20, 200, 20), (20, 20, 220))]
    path = tmp_path / "blink.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    text, data = caption(server.client, path)
    assert text == captioner.caption(frames[0], beam_size=1)[0].text
    red, green, blue = shown(data).reshape(-1, 3).mean(axis=0)
    assert red > 180 and green < 60 and blue < 60


# ----------------------------------------------------------------------------------------------------------------
# load


def test_concurrent_clients_get_identical_captions_and_memory_stays_bounded(server):
    assert_still_serves(server)  # warm
    size = load_image(GOOD).size
    before = vm_rss_mb()

    def one_client(i: int) -> list[str]:
        """5 captions, each stepped to its first word: /step's heatmap is fetched while other clients render the
        very same file."""
        client = Client(server.url, verbose=False, download_files=False)  # files come back as URLs
        texts = []
        try:
            for _ in range(5):
                text, data = caption(client, GOOD)
                heatmap, _ = client.predict(0, data, api_name="/step")
                response = httpx.get(heatmap["url"], timeout=30)
                response.raise_for_status()
                assert Image.open(io.BytesIO(response.content)).size == size  # complete, not cut by a rewrite
                texts.append(text)
        finally:
            client.close()
        return texts

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one_client, i) for i in range(8)]
        texts = [text for future in futures for text in future.result(timeout=120)]
    growth = vm_rss_mb() - before
    assert len(texts) == 40 and set(texts) == {server.expected}  # identical input, identical caption
    assert growth < 300, f"resident memory grew by {growth:.0f} MB over 40 requests"


def test_a_full_queue_refuses_fast_with_a_clear_message(captioner, tmp_path, launch_demo):
    delay = 1.0

    def slow_search(*args, **kwargs):
        time.sleep(delay)
        return captioner.caption_pools(*args, **kwargs)

    slow = SimpleNamespace(
        image_batch=captioner.image_batch, encode=captioner.encode, caption_pools=slow_search, config=captioner.config
    )
    slow.training, slow.train, slow.eval = False, lambda mode=True: slow, lambda: slow  # as nn.Module's
    demo = app.build_demo(slow, concurrency=1, examples=[], cache_examples=False)
    demo.queue(max_size=1)
    url = launch_demo(demo)
    clients = []
    try:
        with ThreadPoolExecutor(6) as pool:
            clients += list(
                pool.map(lambda i: Client(url, verbose=False, download_files=str(tmp_path / str(i))), range(6))
            )
            start = threading.Barrier(6)

            def request(client: Client):
                start.wait()
                began = time.monotonic()
                try:
                    return "ok", caption(client, GOOD)[0], time.monotonic() - began
                except QueueError as error:
                    return "refused", str(error), time.monotonic() - began

            futures = [pool.submit(request, client) for client in clients]
            outcomes = [future.result(timeout=60) for future in futures]  # nobody hangs
        served = [o for o in outcomes if o[0] == "ok"]
        refused = [o for o in outcomes if o[0] == "refused"]
        assert len(served) + len(refused) == 6 and served and len(refused) >= 3
        assert all("Queue is full" in message for _, message, _ in refused)
        assert all(seconds < delay for *_, seconds in refused)  # refused at once, not after waiting
        assert {text for _, text, _ in served} == {captioner.caption(load_image(GOOD), beam_size=1)[0].text}
        assert caption(clients[0], GOOD)[0] == served[0][1]  # and the server serves the next request
    finally:
        for client in clients:
            client.close()
        demo.close()


# ----------------------------------------------------------------------------------------------------------------
# --share and --auth (a share link cannot be made offline; the local server has the same login)


def test_share_warning_only_without_auth():
    assert launch.share_warning(False, None) is None
    assert launch.share_warning(True, ("alice", "s3cret")) is None
    warning = launch.share_warning(True, None)
    assert "--share without --auth" in warning and "anyone" in warning and "--auth USER:PASS" in warning


def test_share_without_auth_warns_that_the_link_is_public(tiny_model_dir, monkeypatch, tmp_path, local_port, capsys):
    served = []
    assert (
        run_main(
            ["--model", str(tiny_model_dir), "--share"],
            monkeypatch,
            tmp_path,
            local_port,
            lambda url: served.append(httpx.get(url + "config").status_code),
        )
        == 0
    )
    err = capsys.readouterr().err
    assert launch.share_warning(True, None) in err
    assert "could not create a public share link" in err  # offline: no link, the local server still runs
    assert served == [200]  # and it needs no login


def test_share_with_auth_requires_the_password(tiny_model_dir, monkeypatch, tmp_path, local_port, capsys):
    checks = {}

    def on_serve(url: str) -> None:
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, verbose=False, auth=("alice", "wrong"))
        checks["config"] = httpx.get(url + "config").status_code
        checks["upload"] = httpx.post(url + "gradio_api/upload", files={"files": ("a.jpg", b"x")}).status_code
        checks["join"] = httpx.post(url + "gradio_api/queue/join", json={}).status_code
        client = Client(url, verbose=False, auth=("alice", "s3cret"), download_files=str(tmp_path / "downloads"))
        checks["caption"] = caption(client, GOOD)[0]
        client.close()

    argv = ["--model", str(tiny_model_dir), "--share", "--auth", "alice:s3cret"]
    assert run_main(argv, monkeypatch, tmp_path, local_port, on_serve) == 0
    assert (checks["config"], checks["upload"], checks["join"]) == (401, 401, 401)
    assert checks["caption"]
    assert "--share without --auth" not in capsys.readouterr().err
