"""Where `parrot` flag values come from (the command line, `PARROT_*` environment variables,
the `--config` TOML file, the defaults) and how the server logs (text or JSON lines)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tomllib
from typing import Any


def load_config(argv: list[str] | None) -> tuple[str | None, dict[str, Any]]:
    """The `--config` file (or PARROT_CONFIG), read before the real parser is built so its
    values can serve as defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=os.environ.get("PARROT_CONFIG"))
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return None, {}
    try:
        with open(known.config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"parrot: cannot read config file {known.config}: {exc}") from None
    return known.config, {str(k).replace("_", "-"): v for k, v in data.items()}


class Options:
    """Adds flags whose defaults come from the environment or the config file."""

    def __init__(self, parser: argparse.ArgumentParser, file_values: dict[str, Any]) -> None:
        self.parser = parser
        self.file_values = file_values

    def __call__(self, flag: str, default, help: str, **kwargs) -> None:
        env = "PARROT_" + flag.lstrip("-").replace("-", "_").upper()
        typ = kwargs.pop("type", str)
        raw = os.environ.get(env)
        key = flag.lstrip("-")
        try:
            if raw not in (None, ""):
                value = typ(raw)
            elif key in self.file_values:
                value = typ(self.file_values[key])
            else:
                value = default
        except (TypeError, ValueError):
            self.parser.error(
                f"{flag}: {raw or self.file_values.get(key)!r} is not a valid {typ.__name__}"
            )
        choices = kwargs.get("choices")
        if choices is not None and value is not None and value not in choices:
            # argparse checks choices on the command line only, not on defaults.
            self.parser.error(
                f"{flag}: {value!r} (from {env} or the config file) is not one of "
                f"{', '.join(map(str, choices))}"
            )
        shown = "%(default)s" if default is not None else "see above"
        self.parser.add_argument(
            flag, type=typ, default=value, help=f"{help} [env {env}; default: {shown}]", **kwargs
        )


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; `extra=` fields of a record are kept."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= {k: v for k, v in record.__dict__.items() if k not in self._STANDARD}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_setup(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    # httpx logs every request at info: with engines behind the ServeCore that is one line per
    # health check and per engine request.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
