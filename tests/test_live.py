"""Live captioning without a browser: the model thread every model call of the demo runs on, and /live's handler
(one camera frame, a JPEG data URL, captioned with the live settings)."""

from __future__ import annotations

import contextvars
import inspect
import threading

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from captioning import handlers
from captioning.cli import app
from captioning.model import Captioner
from captioning.model_thread import ModelThread
from captioning.payload import encode_image
from captioning.shipped import EXAMPLES_DIR

DOGS, CAT = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "cat.jpg"


@pytest.fixture(scope="module")
def captioner(tiny_model_dir):
    return Captioner.load(tiny_model_dir)


def frame_of(path, side: int = 448) -> str:
    """A photo as the page sends a camera frame: scaled to `side` px at most, as a JPEG data URL."""
    image = Image.open(path).convert("RGB")
    image.thumbnail((side, side))
    return encode_image(image, quality=85)


def test_the_model_thread_runs_every_call_on_one_thread_in_order():
    model_thread = ModelThread()
    try:
        threads = [model_thread.run(threading.get_ident) for _ in range(3)]
        assert len(set(threads)) == 1 and threads[0] == model_thread.ident != threading.get_ident()

        def caption(path: str, beam: int = 3) -> str:
            """Docstring kept."""
            return f"{path}@{beam}:{threading.get_ident()}"

        bound = model_thread.bind(caption)
        assert bound("x", beam=2) == f"x@2:{threads[0]}"
        assert bound.__name__ == "caption" and bound.__doc__ == "Docstring kept."
        assert list(inspect.signature(bound).parameters) == ["path", "beam"]  # what Gradio reads
        assert model_thread.run(bound, "y") == f"y@3:{threads[0]}"  # a call from the thread itself: no deadlock
        with pytest.raises(ValueError, match="boom"):
            model_thread.run(int, "boom")
    finally:
        model_thread.close()


def test_a_call_on_the_model_thread_sees_the_callers_context_variables():
    """gr.Warning finds its request through context variables: a handler run on the model thread must see them."""
    request = contextvars.ContextVar("request", default=None)
    model_thread = ModelThread()
    try:
        token = request.set("visitor-1")
        assert model_thread.run(request.get) == "visitor-1"
        request.reset(token)
        assert model_thread.run(request.get) is None
    finally:
        model_thread.close()


def test_a_camera_frame_is_captioned_with_the_live_settings(captioner):
    frame = frame_of(DOGS)
    data = handlers.caption_frame(captioner, frame)
    expected = captioner.caption_pools(handlers.image_features(captioner, handlers.decode_image(frame)), 1)[0][0]
    assert data["words"] == expected.words and data["caption"] == expected.text
    assert data["image"] == frame and data["beam"] == handlers.LIVE_BEAM == 1 and data["alternatives"] == []
    assert "alphas" not in data and data["grid"] == [14, 14] and data["model"] == "model"
    assert handlers.caption_frame(captioner, frame_of(CAT))["id"] != data["id"]


def test_frames_that_cannot_be_read_say_why(captioner):
    with pytest.raises(handlers.RequestError, match="No camera frame"):
        handlers.caption_frame(captioner, None)
    with pytest.raises(handlers.RequestError, match="could not be read"):
        handlers.caption_frame(captioner, "data:image/jpeg;base64,bm90IGFuIGltYWdl")
    with pytest.raises(handlers.RequestError, match="could not be read"):  # larger than a display photo
        handlers.caption_frame(captioner, encode_image(Image.new("RGB", (1200, 900), (90, 120, 200))))
    with pytest.raises(handlers.RequestError, match="Unknown model"):
        handlers.caption_frame(captioner, frame_of(DOGS), "other")


def test_every_endpoint_runs_the_model_on_the_demos_model_thread(tiny_model_dir, serve_demo):
    model_thread, captioner, threads = ModelThread(), Captioner.load(tiny_model_dir), []
    for module in captioner.modules():  # the thread of every layer call: encoder, search and probe alike
        module.register_forward_pre_hook(lambda *_: threads.append(threading.get_ident()))
    demo = app.build_demo(captioner, cache_examples=False, model_thread=model_thread)
    with serve_demo(demo) as url:
        client = Client(url, verbose=False)
        for api_name, args in (
            ("/caption", (handle_file(str(DOGS)), 3)),
            ("/compare", (handle_file(str(CAT)), 3, True)),
            ("/probe", (handle_file(str(DOGS)), "a dog")),
            ("/live", (frame_of(CAT), "")),
            ("/check", (handle_file(str(CAT)), "")),
        ):
            calls = len(threads)
            assert client.predict(*args, api_name=api_name)
            assert len(threads) > calls, f"{api_name} ran no model"
    assert set(threads) == {model_thread.ident}
