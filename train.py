"""Train a captioning model: `python train.py --help` (the command lives in captioning/cli/train.py)."""

import sys

from captioning.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
