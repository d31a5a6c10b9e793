"""The parser every command uses: jsonargparse's (through Lightning's), with usage errors on one line.

jsonargparse prints the whole usage (hundreds of trainer options) before the error, and Lightning's
subcommands wrap a wrong value in several lines of Union diagnostics. A user needs the key, the value and the
fix: the message is put on one line and the usage is left to `--help`. Exit status 2, as argparse's.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

USAGE_ERROR = 2
MAX_MESSAGE = 600  # characters: a value printed in full can be a whole config


class UsageError(ValueError):
    """A bad option of one of the template's own subcommands: reported on one line, exit status 2."""


def one_line(message: str) -> str:
    """jsonargparse's message on one line: the Union diagnostics as "expected A or B", the value given short."""
    message = " ".join(str(message).split())
    message, _, given = message.partition(" Given value type:")
    given = given.partition(" Given value: ")[2]
    union = re.search(r"Does not validate against any of the Union subtypes Subtypes: \[.*?\] Errors: (.*)", message)
    if union:
        expected = [e.strip() for e in (" " + union.group(1)).split(" - ") if e.strip()]
        message = message[: union.start()] + " or ".join(e.removeprefix("Expected a ") for e in expected)
        message = message.replace("<class '", "").replace("'>", "")
        message = message.replace('": ', '": expected ', 1) if expected else message
    if given:
        message += f"; got {given[:80]}"
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def exit_with_usage_error(prog: str, message: str) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {one_line(message)} (see {prog} --help)\n")
    raise SystemExit(USAGE_ERROR)


class ProjArgumentParser(LightningArgumentParser):
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a parser used inside another one (jsonargparse's own subparsers) raises
            return super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        exit_with_usage_error(parser.prog.replace(" [options]", ""), message)


def summary(entry: Callable[..., Any]) -> str:
    """A subcommand's description for --help: its entry function's docstring without the Args section, which
    --help lists option by option."""
    return (inspect.getdoc(entry) or "").split("\nArgs:")[0].strip()


def run_function(name: str, entry: Callable[..., Any], args: list[str]) -> Any:
    """A subcommand that needs no fit config: its options are the entry function's typed signature."""
    parser = ProjArgumentParser(prog=f"python -m proj {name}", description=summary(entry))
    parser.add_function_arguments(entry, as_positional=True)
    config = parser.parse_args(args)
    try:
        return entry(**config.as_dict())
    except UsageError as err:
        exit_with_usage_error(parser.prog, str(err))
