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


# jsonargparse's report of a bad init_args value of a class: 'Parser key "model": expected Problem with given
# class_path 'proj.models.Classifier': Parser key "label_smoothing": Expected a float. Got value: lots or NoneType'.
NESTED = re.compile(r'Parser key "([^"]+)": (?:expected )?Problem with given class_path [^:]+: Parser key "([^"]+)"')
NESTED_TAIL = re.compile(r"(Expected .*?)\. Got value: (.*?)(?: or NoneType)?(?:; got NestedArg\(.*\))?$")
# ... and of a class that cannot be used at all (not importable, an unknown init_arg), with the option given.
CLASS_PROBLEM = re.compile(
    r'Parser key "([^"]+)": (?:expected )?(?:.*? - )?Problem with given class_path \'([^\']+)\': (.*?)'
    r"(?: or NoneType)?(?: - [^;]*)?(?:; got NestedArg\(key='([^']+)', val='(.*?)'\))?$"
)


def nested_key(message: str) -> str:
    """'model.init_args.label_smoothing: expected a float; got lots': the full key, what it wants, the value."""
    while NESTED.search(message):
        message = NESTED.sub(lambda m: f'Parser key "{m.group(1)}.init_args.{m.group(2)}"', message, count=1)
    problem = CLASS_PROBLEM.search(message)
    if problem:
        key, cls, reason, option, value = problem.groups()
        reason = re.split(r" or (?:Not a valid|Expected) ", reason)[0]  # the other Union members' complaints
        if option and option.endswith("class_path") and "object has no attribute" in reason:
            reason = f"not an importable class ({reason})"  # jsonargparse's own failure on a missing class
        if option:
            key = f"{key}.{option}" if option == "class_path" else f"{key}.init_args.{option}"
        return f"{key}={value}: {reason}" if option else f"{key} ({cls}): {reason}"
    message = NESTED_TAIL.sub(lambda m: f"e{m.group(1)[1:]}; got {m.group(2)[:80]}", message)
    return re.sub(r'^Parser key "([^"]+)":', r"\1:", message).replace("<class '", "").replace("'>", "")


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
    message = nested_key(message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def construction_error(err: BaseException) -> str:
    """An error raised while building a config key (model, data, trainer, a callback), as one line naming the key.

    jsonargparse reports an exception from a class's __init__ as a Union mismatch whose first listed error is
    the class's own message; that message is kept (the template's classes name their own key and the fix). A
    fact of the data that the model is built from (the data contract) fails in a link: its own message names it."""
    message = str(err)
    linked = re.search(r"Call to compute_fn of link '.*?' with args .*? failed: (.*)", message, re.S)
    if linked:
        return " ".join(linked.group(1).split())
    inner = re.search(r"Errors:\s*- (.*?)(?:\n\s*- Expected a |\nGiven value type:|$)", message, re.S)
    message = " ".join((inner.group(1) if inner else message).split()) or type(err).__name__
    message = message.split(" - Not a valid subclass")[0]  # jsonargparse's list of what a class_path may be
    key = built_key(err)
    return message if message.startswith(f"{key}.") else f"{key}: {message}"


def built_key(err: BaseException) -> str:
    """The config key whose class raised `err` while it was built (jsonargparse names the expected base class)."""
    message = str(err)
    for base, key in (("LightningDataModule", "data"), ("LightningModule", "model"), ("Callback", "trainer.callbacks")):
        if f".{base}'" in message:
            return key
    return "trainer.logger" if "Logger'" in message else "trainer"


def exit_with_usage_error(prog: str, message: str) -> NoReturn:
    sys.stderr.write(f"{prog}: error: {one_line(message)} (see {prog} --help)\n")
    raise SystemExit(USAGE_ERROR)


class ProjArgumentParser(LightningArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--trainer.max_epoch 5` is a typo, not max_epochs: say so
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a parser used inside another one (jsonargparse's own subparsers) raises
            return super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        exit_with_usage_error(parser.prog.replace(" [options]", ""), message)


def summary(entry: Callable[..., Any]) -> str:
    """A subcommand's description for --help: its entry function's docstring without the Args section, which
    --help lists option by option."""
    return (inspect.getdoc(entry) or "").split("\nArgs:")[0].strip()


def run_function(name: str, entry: Callable[..., Any], args: list[str], positional: bool = True) -> Any:
    """A subcommand that needs no fit config: its options are the entry function's typed signature (its required
    parameters positional, or all --options with positional=False)."""
    parser = ProjArgumentParser(prog=f"python -m proj {name}", description=summary(entry))
    parser.add_function_arguments(entry, as_positional=positional)
    config = parser.parse_args(args)
    try:
        return entry(**config.as_dict())
    except UsageError as err:
        exit_with_usage_error(parser.prog, str(err))
