"""`node`: serve the API and run the supervisor, headless."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from exalate_tui.home.store import Home


def cmd_node(args: argparse.Namespace, home: Home) -> int:
    import logging

    from exalate_tui.lifecycle.runtime import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: one line per push and long-poll would bury the
    # node's own lines in the journal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from exalate_tui.sync.service import run_engine

    asyncio.run(serve(home, args.host, args.port, beside=[run_engine]))
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def register(
    commands: Any, home: argparse.ArgumentParser, home_json: argparse.ArgumentParser
) -> None:
    node = commands.add_parser(
        "node", parents=[home], help="serve the API and run the pollers, headless (Ctrl+C stops)"
    )
    node.add_argument(
        "--host", metavar="H", help="address to listen on (default: instance.toml, else 127.0.0.1)"
    )
    node.add_argument(
        "--port", metavar="P", type=_port, help="port (default: instance.toml, else 7917)"
    )
    node.set_defaults(run=cmd_node)
