"""exalate-tui: a keyboard-driven console for cross-instance ticket-sync connections.

Importing the package loads nothing else: headless commands never load
Textual, and the console's first screen never loads FastAPI, uvicorn or httpx.
"""

__version__ = "0.1.0"
