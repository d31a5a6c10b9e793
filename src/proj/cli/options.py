"""Hand-written argument helpers that the template's own subcommands still use.

A run's config.yaml also holds the fit subcommand's own keys, which a parser without subcommands refuses.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml


def take_options(args: list[str], defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Our subcommands' own options (`--name value` or `--name=value`, values as given), and the other args."""
    values, rest, it = dict(defaults), [], iter(args)
    for arg in it:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if name in defaults:
            values[name] = arg.split("=", 1)[1] if "=" in arg else next(it)
        else:
            rest.append(arg)
    return values, rest


SUBCOMMAND_KEYS = ("ckpt_path", "weights_only")


def without_subcommand_keys(args: list[str]) -> list[str]:
    """A run's config.yaml also holds the fit subcommand's own keys (ckpt_path, weights_only); the parser of
    `run=False` (export, tune, cv) has no subcommand and refuses them: give it copies without them."""
    out, it = [], iter(args)
    for arg in it:
        if arg == "--config" or arg.startswith("--config="):
            path = arg.split("=", 1)[1] if "=" in arg else next(it)
            content = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
            if isinstance(content, dict) and any(k in content for k in SUBCOMMAND_KEYS):
                for key in SUBCOMMAND_KEYS:
                    content.pop(key, None)
                with tempfile.NamedTemporaryFile("w", suffix=f"-{Path(path).name}", delete=False) as f:
                    yaml.safe_dump(content, f, sort_keys=False)
                path = f.name
            out += ["--config", path]
        else:
            out.append(arg)
    return out
