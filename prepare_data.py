"""Prepare captioning data: `python prepare_data.py --help` (the command lives in captioning/cli/prepare.py)."""

import sys

from captioning.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
