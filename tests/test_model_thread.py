"""The model thread every model call of the demo runs on (captioning.model_thread)."""

from __future__ import annotations

import contextvars
import inspect
import threading

import pytest

from captioning.model_thread import ModelThread


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
