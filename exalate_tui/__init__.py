"""exalate-tui: a keyboard-driven console for cross-instance ticket-sync connections.

Kept small on purpose: importing the package must not load Textual, FastAPI
or httpx, so headless commands and the console each pay only for what they use.
"""

import sys as _sys
import types as _types

__version__ = "0.1.0"

# pydantic looks for plugins (entry points of every installed distribution) when
# it builds its first model: importing importlib.metadata and scanning the
# installed packages cost ~20 ms of a ~130 ms headless command
# (benchmarks/README.md). exalate-tui uses no pydantic plugin, so it tells
# pydantic there are none, unless pydantic has already looked.
if "pydantic.plugin._loader" not in _sys.modules:
    _no_plugins = _types.ModuleType("pydantic.plugin._loader", "exalate-tui: no pydantic plugins")
    _no_plugins.get_plugins = lambda: ()  # type: ignore[attr-defined]
    _sys.modules["pydantic.plugin._loader"] = _no_plugins
