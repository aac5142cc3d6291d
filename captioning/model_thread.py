"""One thread that makes every torch call of a server: loading, warm-up and each request's model work.

A server's request threads come and go (Gradio runs handlers on a pool of worker threads); torch keeps per-thread
state (its intra-op OpenMP team, oneDNN's scratch buffers), so a model loaded on one thread and run from whichever
worker picks up a request pays for a fresh team per thread, and idle teams spin against the busy one. Handing every
model call to one long-lived thread keeps the model as fast inside the server as in a standalone process
(docs/demo.md has the measurements). Any handler that runs a model goes through it:

    model_thread = ModelThread()
    models = model_thread.run(load_models, directories)   # load on it
    caption = model_thread.bind(handlers.caption)         # every call of `caption` runs on it
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ModelThread:
    """A single worker thread that runs the calls handed to it one at a time, in the order they arrive; the caller
    waits for the result (or the exception) as if it had made the call itself. A call made from the model thread
    itself runs at once (no deadlock when bound functions call each other)."""

    def __init__(self, name: str = "model"):
        self.ident: int | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=self.mark_thread)

    def mark_thread(self) -> None:
        self.ident = threading.get_ident()

    def run(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        """fn(*args, **kwargs), computed on the model thread."""
        if threading.get_ident() == self.ident:
            return fn(*args, **kwargs)
        # the caller's context variables go along: Gradio finds the request of gr.Warning / gr.Info through them
        return self.executor.submit(contextvars.copy_context().run, fn, *args, **kwargs).result()

    def bind(self, fn: Callable[..., T]) -> Callable[..., T]:
        """fn, each call of which runs on the model thread (name, docstring and signature kept: Gradio reads them)."""

        @functools.wraps(fn)
        def on_model_thread(*args, **kwargs):
            return self.run(fn, *args, **kwargs)

        return on_model_thread

    def close(self) -> None:
        """Stop the thread once the calls already handed to it are done."""
        self.executor.shutdown(wait=False)
