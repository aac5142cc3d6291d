"""The command-line layer: shared flags (args.py) and one module per command, each with its main()."""
