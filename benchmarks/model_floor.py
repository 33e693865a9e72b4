"""The start-up figure's floor: the minimal Textual app, once the home it is given has
been read and validated with the console's own models (`benchmarks/startup.py`).

What any console on this stack does before it can show a connection (pydantic and
the models imported, `instance.toml` and every `connections/*.toml` parsed with
tomllib and validated), then nothing more than the minimal app: the console's
rows are measured against it. `python benchmarks/model_floor.py HOME`.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from minimal_app import MinimalApp

from exalate_tui.domain.models import Connection, Instance

if __name__ == "__main__":
    home = Path(sys.argv[1])
    Instance.model_validate(tomllib.loads((home / "instance.toml").read_text()))
    for path in sorted((home / "connections").glob("*.toml")):
        Connection.model_validate(tomllib.loads(path.read_text()))
    MinimalApp().run()
