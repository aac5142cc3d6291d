"""Command-line flags that can also be set by environment variables, for hosts that start a command without
arguments (a Hugging Face Space runs `python app.py`): the variable sets the flag's default, a flag given on the
command line wins, and a malformed value stops the start-up with one line naming the variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

SEPARATOR = ","  # between the values of a repeatable flag given in one variable: CAPTIONING_MODEL=a,b


class Repeatable(argparse.Action):
    """action="append" whose default (e.g. taken from the environment) is replaced, not extended, by the values given
    on the command line."""

    def __call__(self, parser, namespace, value, option_string=None):
        current = getattr(namespace, self.dest, None)
        values = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, [*values, value])


def flag_action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    """The parser's action of an option string such as --model."""
    return next(action for action in parser._actions if flag in action.option_strings)


def name_variables(parser: argparse.ArgumentParser, variables: Mapping[str, str]) -> None:
    """Ends the --help text of each flag in `variables` (flag -> environment variable) with its variable's name."""
    for flag, variable in variables.items():
        action = flag_action(parser, flag)
        several = f" (values separated by '{SEPARATOR}')" if isinstance(action, Repeatable) else ""
        action.help = f"{action.help}; environment: ${variable}{several}"


def read_value(action: argparse.Action, text: str):
    """One value of a flag, converted and checked as argparse converts and checks it on the command line."""
    value = action.type(text) if action.type else text
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, action.choices))}")
    return value


def variable_value(action: argparse.Action, variable: str, text: str, secret: bool):
    """A flag's value from its variable's text (a list for a Repeatable flag: the values between commas); raises
    ValueError with the one line to print, which never shows a secret's value."""
    texts = [t.strip() for t in text.split(SEPARATOR) if t.strip()] if isinstance(action, Repeatable) else [text]
    try:
        if not texts:
            raise argparse.ArgumentTypeError("no value")
        values = [read_value(action, t) for t in texts]
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        shown = variable if secret else f"{variable}={text!r}"
        reason = f": {error}" if isinstance(error, argparse.ArgumentTypeError) else ""
        raise ValueError(f"error: {shown} is not a valid {action.option_strings[0]} value{reason}") from None
    return values if isinstance(action, Repeatable) else values[0]


def parse_with_environment(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    variables: Mapping[str, str],
    secrets: frozenset[str] = frozenset(),
    environ: Mapping[str, str] | None = None,
) -> argparse.Namespace:
    """parser.parse_args(argv) with each set (non-empty) variable of `variables` (flag -> variable) as its flag's
    default. A malformed value exits with status 2 and one line; the values of `secrets` are never shown."""
    environ = os.environ if environ is None else environ
    defaults = {}
    for flag, variable in variables.items():
        if environ.get(variable, "").strip():
            action = flag_action(parser, flag)
            try:
                defaults[action.dest] = variable_value(action, variable, environ[variable], variable in secrets)
            except ValueError as error:
                parser.exit(2, f"{error}\n")
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)
