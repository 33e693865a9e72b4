"""The sandbox Script rules run in: RestrictedPython's policy, and the worker process.

Two halves, one module, so the words of the policy live in one place:

- `check(source, filename)` compiles a rule under the policy and lists what it
  refuses, each with its line (`Problem`): a syntax error, `import`, a name or
  attribute starting with `_` (so no `__class__`/`__subclasses__` walks), and
  the builtins a rule must not reach (`open`, `exec`, `eval`, `getattr`, …).
  Saving a rule runs it first (sync/script.py), so a refused rule never comes
  into force.
- `main()` is the worker (`python -m exalate_tui.sync.sandbox`): it reads
  requests as length-prefixed JSON frames on stdin, runs the compiled rule on
  plain data (JSON in, JSON out: nothing of the caller's process is reachable
  from a rule) and answers on stdout. sync/runner.py starts it, gives each run
  a deadline and kills it past that.

Why a process of its own rather than a trace hook or a thread: a hook sees
Python lines only, so one C call (`sum(range(10**12))`, `10**10**9`,
`"x" * 10**10`) runs on unseen and can take all the memory; a thread cannot be
stopped at all. A separate process is killed by the kernel wherever it is,
and its address-space limit (RLIMIT_AS) turns a huge allocation into a
`MemoryError` in the rule instead of an out-of-memory host. It also cannot
open files, fork, or write any (RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE):
defence in depth behind the policy.

Imports only the standard library and RestrictedPython: the worker starts in
tens of milliseconds.
"""

from __future__ import annotations

import ast
import contextlib
import json
import struct
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from RestrictedPython import compile_restricted_exec, safe_builtins
from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr_raise,
)
from RestrictedPython.transformer import RestrictingNodeTransformer

OUTGOING = "outgoing"
INCOMING = "incoming"
DIRECTIONS = (OUTGOING, INCOMING)

# Builtins a rule never gets, refused by name on save (not only absent at run time).
FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "globals",
        "locals",
        "vars",
        "dir",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "type",
        "object",
        "super",
        "input",
        "breakpoint",
        "help",
        "memoryview",
        "classmethod",
        "staticmethod",
        "property",
    }
)

# Beside RestrictedPython's safe builtins (minus `__build_class__`: no classes in a rule).
_EXTRA_BUILTINS = {
    f.__name__: f
    for f in (
        sorted,
        min,
        max,
        sum,
        any,
        all,
        enumerate,
        zip,
        list,
        dict,
        set,
        frozenset,
        tuple,
        map,
        filter,
        reversed,
    )
}

FRAME = struct.Struct(">I")
# A request or answer larger than this is refused (a rule's replica is far smaller).
MAX_FRAME = 64 * 1024 * 1024


@dataclass(frozen=True)
class Problem:
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy, and: no import at all, no class, none of
    `FORBIDDEN_NAMES`."""

    def visit_Import(self, node: ast.Import) -> Any:
        self.error(node, "import is not allowed in a rule: everything it may use is given")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        self.error(node, "import is not allowed in a rule: everything it may use is given")

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        self.error(node, "a rule cannot define classes: use functions and dicts")

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in FORBIDDEN_NAMES:
            self.error(node, f"{node.id!r} is not allowed in a rule")
        return super().visit_Name(node)


def _line(message: str) -> tuple[int | None, str]:
    # RestrictedPython says "Line 3: ..." for syntax errors and policy refusals alike.
    if message.startswith("Line "):
        head, _, rest = message.partition(": ")
        number = head.removeprefix("Line ")
        if number.isdigit():
            return int(number), rest
    return None, message


def compile_rule(source: str, filename: str) -> tuple[Any, list[Problem]]:
    """The rule's code object, or None and what the policy refuses, each with its line."""
    result = compile_restricted_exec(source, filename=filename, policy=_Policy)
    problems = [Problem(*_line(message)) for message in result.errors]
    return (result.code if not problems else None), problems


def check(source: str, filename: str) -> list[Problem]:
    """What the policy refuses in `source`; empty when it may be saved."""
    return compile_rule(source, filename)[1]


# -- what a rule sees (inside the worker) ------------------------------------------


class _Printed:
    """`print` in a rule: collected, shown by a Test run."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def __call__(self, *_: object) -> Any:  # `_print_(_getattr_)` and `printed`
        return self if _ else "".join(self.parts)

    def write(self, text: str) -> None:
        if sum(map(len, self.parts)) < 65536:
            self.parts.append(text)

    def _call_print(self, *objects: object, sep: str = " ", end: str = "\n", **_: object) -> None:
        self.write(sep.join(str(o) for o in objects) + end)


class Skip(Exception):
    """`skip("why")` in an outgoing rule: this ticket does not sync (not an error)."""


def _skip(reason: str = "the outgoing rule skips it") -> None:
    raise Skip(str(reason))


class Record:
    """Read-only data: attributes and items; a missing one is an error that names it
    (or None, `lenient`, for a replica's fields). The write guard refuses any change."""

    def __init__(self, data: dict[str, Any], what: str, lenient: bool = False) -> None:
        self._data = data
        self._what = what
        self._lenient = lenient

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            if self._lenient:
                return None
            raise AttributeError(
                f"{self._what} has no {name!r} (it has {', '.join(sorted(self._data))})"
            ) from None

    __getitem__ = __getattr__

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def __repr__(self) -> str:
        return f"<{self._what} {self._data!r}>"


class Draft:
    """What a rule fills in: `replica` (outgoing) or `ticket` (incoming).

    `x.name = value` and `x["name"] = value` set a field; reading one gives what
    was set (None before). `comments` and `attachments` of an outgoing replica
    are lists of the ticket's own. No methods: every public name is a field.
    """

    def __init__(self, what: str, lists: tuple[str, ...] = ()) -> None:
        self._what = what
        self._lists = lists
        for name in lists:
            setattr(self, name, [])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return None  # a field not set (yet)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, _field_name(name))

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, _field_name(name), value)

    def __delitem__(self, name: str) -> None:
        vars(self).pop(_field_name(name), None)

    def __repr__(self) -> str:
        return f"<{self._what} {_drafted(self)!r}>"


def _field_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name.startswith("_"):
        raise KeyError(f"{name!r} cannot be a field's name")
    return name


def _drafted(draft: Draft) -> dict[str, Any]:
    """The fields a rule set on `draft`."""
    return {
        name: value
        for name, value in vars(draft).items()
        if not name.startswith("_") and name not in draft._lists
    }


class _Merge:
    """`comments.merge(...)` / `attachments.merge(...)` in an incoming rule: what to add
    here, each remote item once (the engine skips what is already on the ticket)."""

    def __init__(self, what: str, key: str) -> None:
        self._what, self._key = what, key
        self.chosen: dict[str, bool] = {}

    def merge(self, items: Iterable[Record] | Record, internal: bool = False) -> None:
        chosen: Iterable[Any] = (items,) if isinstance(items, Record) else items
        for item in chosen:
            if not isinstance(item, Record) or self._key not in item:
                raise TypeError(f"{self._what}.merge takes the replica's {self._what}")
            self.chosen.setdefault(item[self._key], bool(internal))


def _write_guard(ob: Any) -> Any:
    if isinstance(ob, (Draft, dict, list, set)):
        return ob
    if isinstance(ob, Record):
        raise TypeError(f"{ob._what} is read-only here")
    raise TypeError(f"a {type(ob).__name__} cannot be changed in a rule")


def _inplace(op: str, x: Any, y: Any) -> Any:
    ops = {
        "+=": lambda: x + y,
        "-=": lambda: x - y,
        "*=": lambda: x * y,
        "/=": lambda: x / y,
        "//=": lambda: x // y,
        "%=": lambda: x % y,
        "|=": lambda: x | y,
        "&=": lambda: x & y,
    }
    if op not in ops:
        raise TypeError(f"{op} is not allowed in a rule")
    return ops[op]()


def _builtins() -> dict[str, Any]:
    names = dict(safe_builtins)
    names.pop("__build_class__", None)
    names.update(_EXTRA_BUILTINS)
    return names


_BUILTINS = _builtins()


def _comment(data: dict[str, Any]) -> Record:
    return Record(data, "comment")


def _attachment(data: dict[str, Any]) -> Record:
    return Record(data, "attachment")


def _replica_view(doc: dict[str, Any] | None, what: str) -> Record | None:
    if doc is None:
        return None
    fields = dict(doc.get("fields", {}))
    data = {
        **fields,
        "fields": dict(fields),
        "changed": frozenset(doc.get("changed_names", ())),
        "comments": [_comment(c) for c in doc.get("comments", [])],
        "attachments": [_attachment(a) for a in doc.get("attachments", [])],
    }
    return Record(data, what, lenient=True)


def _globals(kind: str, data: dict[str, Any], printed: _Printed) -> dict[str, Any]:
    names: dict[str, Any] = {
        "__builtins__": _BUILTINS,
        "__name__": "rule",
        "_getattr_": safer_getattr_raise,
        "_getitem_": default_guarded_getitem,
        "_getiter_": default_guarded_getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": _write_guard,
        "_inplacevar_": _inplace,
        "_print_": printed,
        "skip": _skip,
        "connection": Record(data.get("connection", {}), "connection"),
        "STATUSES": tuple(data.get("statuses", ())),
        "PRIORITIES": tuple(data.get("priorities", ())),
        "TYPES": tuple(data.get("types", ())),
    }
    if kind == OUTGOING:
        ticket = dict(data["ticket"])
        ticket["comments"] = [_comment(c) for c in ticket.get("comments", [])]
        ticket["attachments"] = [_attachment(a) for a in ticket.get("attachments", [])]
        ticket["labels"] = tuple(ticket.get("labels", ()))
        names["ticket"] = Record(ticket, "ticket")
        names["replica"] = Draft("replica", lists=("comments", "attachments"))
    else:
        names["replica"] = _replica_view(data["replica"], "replica")
        names["previous"] = _replica_view(data.get("previous"), "previous")
        names["first_sync"] = bool(data.get("first_sync"))
        names["ticket"] = Draft("ticket")
        names["comments"] = _Merge("comments", "id")
        names["attachments"] = _Merge("attachments", "sha256")
    return names


def _plain(value: Any, where: str) -> Any:
    """A field's value as JSON data, or TypeError naming the field."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise TypeError(f"{where} is a {type(value).__name__}: a field holds text, numbers, lists")


def _ids(items: list[Any], key: str, where: str) -> list[str]:
    ids = []
    for item in items:
        if not isinstance(item, Record) or key not in item:
            raise TypeError(f"{where} takes the ticket's own {where.split('.')[-1]}")
        ids.append(item[key])
    return ids


def run(code: Any, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """Run a compiled rule on `data`; what it made, as JSON data (raises what the rule
    raised)."""
    printed = _Printed()
    names = _globals(kind, data, printed)
    exec(code, names)
    draft = names["replica"] if kind == OUTGOING else names["ticket"]
    fields = {
        name: _plain(value, f"{draft._what}.{name}") for name, value in _drafted(draft).items()
    }
    out: dict[str, Any] = {"fields": fields, "printed": printed()}
    if kind == OUTGOING:
        out["comments"] = _ids(draft.comments, "id", "replica.comments")
        out["attachments"] = _ids(draft.attachments, "sha256", "replica.attachments")
    else:
        out["comments"] = list(names["comments"].chosen.items())
        out["attachments"] = list(names["attachments"].chosen)
    return out


def _rule_line(error: BaseException, filename: str) -> int | None:
    """The line of the rule where `error` happened: its deepest frame in the rule."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


# -- the worker --------------------------------------------------------------------


def _limit(memory: int) -> None:
    import resource

    for name, value in (
        ("RLIMIT_AS", memory),
        # Only the pipes stay open: a rule that got out could not open a file either.
        ("RLIMIT_NOFILE", 3),
        ("RLIMIT_NPROC", 0),
        ("RLIMIT_FSIZE", 0),
        ("RLIMIT_CORE", 0),
    ):
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        soft, hard = resource.getrlimit(limit)
        wanted = value if hard == resource.RLIM_INFINITY else min(value, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(limit, (wanted, hard))


def _read(stream: Any) -> Any:
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    return json.loads(stream.read(size))


def _write(stream: Any, doc: Any) -> None:
    body = json.dumps(doc, separators=(",", ":")).encode()
    stream.write(FRAME.pack(len(body)) + body)
    stream.flush()


def _current_memory() -> int:
    import os

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def main(argv: list[str] | None = None) -> int:
    """The worker: `python -m exalate_tui.sync.sandbox MEMORY_MB`."""
    args = sys.argv[1:] if argv is None else argv
    memory = int(args[0]) if args else 256
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    _limit(_current_memory() + memory * 1024 * 1024)
    codes: dict[str, tuple[Any, str]] = {}
    _write(stdout, {"ready": True})
    while True:
        request = _read(stdin)
        if request is None:
            return 0
        key, filename = request["key"], request["filename"]
        if "source" in request:
            code, problems = compile_rule(request["source"], filename)
            if problems:
                _write(
                    stdout,
                    {
                        "error": {
                            "line": problems[0].line,
                            "type": "refused",
                            "message": problems[0].reason,
                        }
                    },
                )
                continue
            codes[key] = (code, filename)
        if key not in codes:
            _write(stdout, {"need": key})
            continue
        code, filename = codes[key]
        try:
            answer: dict[str, Any] = {"ok": run(code, request["kind"], request["data"])}
        except Skip as skipped:
            answer = {"error": {"line": None, "type": "skip", "message": str(skipped)[:500]}}
        except MemoryError:
            answer = {
                "error": {
                    "line": None,
                    "type": "MemoryError",
                    "message": f"the rule needed more than {memory} MiB",
                },
                "restart": True,
            }
        except RecursionError as error:
            answer = {
                "error": {
                    "line": _rule_line(error, filename),
                    "type": "RecursionError",
                    "message": "the rule recursed too deeply",
                }
            }
        except Exception as error:
            answer = {
                "error": {
                    "line": _rule_line(error, filename),
                    "type": type(error).__name__,
                    "message": str(error)[:500],
                }
            }
        _write(stdout, answer)


if __name__ == "__main__":
    sys.exit(main())
