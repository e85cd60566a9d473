"""The ``osteoscan`` command: a thin layer over the Python API.

Each sub-command lives in the package that owns it, as a module exposing

* ``HELP: str``                              one-line help,
* ``add_arguments(parser) -> None``          argparse arguments,
* ``run(args) -> int``                       the command itself (exit code).

Those modules must keep heavy imports (torch, openvino, pydicom ...) inside ``run`` so that
``osteoscan --help`` stays instant. User-facing errors are ``OsteoscanError`` subclasses and become a
one-line message with the error's exit code (2 for rejected input); anything else is an internal
error (exit code 1) and is logged with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from osteoscan import __version__
from osteoscan.errors import OsteoscanError

log = logging.getLogger("osteoscan")

#: sub-command name -> module implementing it (see module docstring)
COMMANDS: dict[str, str] = {
    "info": "osteoscan.io.cli",
    "demo": "osteoscan.pipeline.demo_cli",
    "run": "osteoscan.pipeline.cli",
    "phantom": "osteoscan.phantom.cli",
    "train": "osteoscan.train.cli",
    "evaluate": "osteoscan.train.evaluate_cli",
    "bench": "osteoscan.pipeline.bench_cli",
    "models": "osteoscan.runtime.cli",
    "serve": "osteoscan.server.cli",
    "batch": "osteoscan.batch.cli",
}


def setup_logging(verbosity: int) -> None:
    """-q: warnings only; default: INFO in pipes/services, WARNING on a terminal (which shows a
    progress bar instead); -v: INFO; -vv: DEBUG."""
    tty = sys.stderr.isatty()
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity == 0:
        level = logging.WARNING if tty else logging.INFO
    else:
        level = logging.INFO if verbosity == 1 else logging.DEBUG
    handler: logging.Handler
    if tty:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osteoscan",
        description="Opportunistic bone-density, fracture and body-composition screening on routine CT.",
    )
    parser.add_argument("--version", action="version", version=f"osteoscan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("osteoscan"):
                continue  # command not built yet in this checkout
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_command_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    if not getattr(args, "_command_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._command_module.run(args) or 0)
    except OsteoscanError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:  # last resort: report an internal error with its traceback, exit 1
        log.exception("internal error; please report it with the log above")
        return 1


if __name__ == "__main__":
    sys.exit(main())
