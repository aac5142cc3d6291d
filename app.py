"""The Gradio demo: `python app.py` serves the shipped models on http://127.0.0.1:7860 (`--help` for options).

The demo itself is captioning/cli/app.py (also installed as the `captioning-app` command).
"""

import sys

if __name__ == "__main__":
    try:  # torch and gradio take seconds to import on a small CPU: Ctrl-C meanwhile is one line, not a traceback
        from captioning.cli.app import main
    except KeyboardInterrupt:
        print("\ninterrupted during start-up; nothing is being served", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
