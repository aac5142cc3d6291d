"""Serving a built demo as `python app.py` does: launched quietly (Gradio's own lines kept to the debug log), this
app's lines about where it serves and about --share, then blocking until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys

import gradio as gr

# How the demo is launched, besides address and login. Gradio's run history is off: it rewrites every past call, its
# payload included, into the browser's localStorage at each message of each call (the page slows with every
# caption), and it would keep visitors' photos' captions in their browser.
LAUNCH_SETTINGS = {"run_history": False}

log = logging.getLogger("app")


def share_warning(share: bool, auth: tuple[str, str] | None) -> str | None:
    """What to print when --share would open the demo to anyone holding the link; None when it is safe."""
    if share and auth is None:
        return (
            "warning: --share without --auth: the public link is open to anyone who has it: they can use this "
            "demo, its API and your CPU. Add --auth USER:PASS to require a login."
        )
    return None


def launch(demo: gr.Blocks, args: argparse.Namespace) -> int:
    """Serve the queued demo at the command line's address, with its login and upload limit, until Ctrl-C; 2 when
    the address cannot be served on. The demo is closed on return."""
    try:
        # quiet, and what Gradio prints anyway kept to the debug log: its hints name launch() arguments, and
        # offline its share-link failure is a page of advice on antivirus software; this app's lines follow.
        gradio_output = io.StringIO()
        try:
            with contextlib.redirect_stdout(gradio_output):
                _, local_url, share_url = demo.launch(
                    **LAUNCH_SETTINGS,
                    server_name=args.host,
                    server_port=args.port,
                    root_path=args.root_path,
                    share=args.share,
                    auth=args.auth,
                    quiet=True,
                    max_file_size=args.max_file_size,
                    prevent_thread_lock=True,
                )
        except OSError as error:  # port taken, address not available
            print(f"error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
            return 2
        finally:
            log.debug("gradio's launch output: %s", gradio_output.getvalue().strip())
        print(f"* Running on local URL:  {local_url}", flush=True)
        if share_url:
            print(f"* Running on public URL: {share_url}", flush=True)
        elif args.share:
            print(
                "could not create a public share link: --share needs internet (Gradio's relay, gradio.live); "
                f"serving locally at {local_url}",
                file=sys.stderr,
            )
        else:
            print(
                "* To create a public link, rerun with --share (and --auth USER:PASS to require a login).", flush=True
            )
        demo.block_thread()
    finally:
        demo.close()
    return 0
