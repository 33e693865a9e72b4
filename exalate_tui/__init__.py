"""exalate-tui: a keyboard-driven console for cross-instance ticket-sync connections.

Kept empty on purpose: importing the package must not load Textual, FastAPI
or httpx, so headless commands and the console each pay only for what they use.
"""

__version__ = "0.1.0"
