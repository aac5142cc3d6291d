"""What the attention check of a 12-word caption costs in the demo, beside captioning the same photo: medians over
repeats, every row in the same run.

    python -m bench.attention_check_cost                  # shipped soft model, a 1024x768 JPEG
    python -m bench.attention_check_cost --model assets/model_hard --repeats 3

Rows: /caption's work on a new photo (decode, encode, beam 3); /check's on a photo already captioned (its features
cached; 12 x (1 + 4) hidden photos through the encoder in batches, one teacher-forced re-reading, the gradient), and
the encoder's batches alone.
"""

from __future__ import annotations

import torch

from bench.probe_cost import SENTENCE, captioned_photo, cost_arguments, median_ms
from captioning import handlers
from captioning.attention_check import ELSEWHERE_DRAWS, encode_in_batches


def main() -> None:
    args = cost_arguments(__doc__.splitlines()[0], repeats=3)
    captioner, photo, cache = captioned_photo(args.model)
    words = len(SENTENCE.split())
    hidden = torch.zeros(words * (1 + ELSEWHERE_DRAWS), 3, *[captioner.config.preprocessing.input_size] * 2)
    rows = {
        "/caption, new photo (decode + encode + beam 3)": lambda: handlers.caption(captioner, photo, 3),
        "/check, photo already captioned (no result kept)": lambda: handlers.check(
            captioner, photo, SENTENCE, cache=cache
        ),
        f"the encoder alone on the {len(hidden)} hidden photos": lambda: encode_in_batches(captioner, hidden),
    }
    print(f"model {args.model}; photo 1024x768 JPEG; {words}-word sentence; medians of {args.repeats}")
    for label, run in rows.items():
        print(f"{label:<52} {median_ms(run, args.repeats):9.1f} ms")


if __name__ == "__main__":
    main()
