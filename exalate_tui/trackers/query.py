"""ServiceNow's encoded-query syntax, parsed against a tracker's fields: filters and triggers.

The syntax and the operators' meanings follow ServiceNow's own pages:
"Encoded query strings"
(https://www.servicenow.com/docs/r/platform-user-interface/c_EncodedQueryStrings.html)
and "Operators available for filters and queries"
(https://docs.servicenow.com/bundle/istanbul-platform-user-interface/page/use/common-ui-elements/reference/r_OpAvailableFiltersQueries.html).

    status=new^priority<=2                  AND: both hold
    status=new^priority=1^ORpriority=2      ^OR joins the condition just before it:
                                            status=new AND (priority=1 OR priority=2)
    priority=1^NQstatus=on_hold             ^NQ starts a new query: either group holds
    status!=closed^ORDERBYDESCupdated       ORDERBY<f> / ORDERBYDESC<f>: the order of results

A condition is `<field><operator><value>`, with no spaces around the operator:
`=` `!=` `<` `<=` `>` `>=`, `LIKE` (contains) and `NOTLIKE`, `STARTSWITH`,
`ENDSWITH`, `IN` and `NOT IN` (a comma list), `ISEMPTY` and `ISNOTEMPTY` (no
value). Text compares ignoring case, as ServiceNow's database does; `!=`,
`NOTLIKE` and `NOT IN` are exactly the negation of `=`, `LIKE` and `IN`, so
they also hold for an empty field. On a labels field (a list of words) a
condition holds when it holds for one of the labels (`labels=vip`: vip is one
of them); `!=`, `NOTLIKE`, `NOT IN` when it holds for none. A trailing `^EQ`
(ServiceNow's filter builder writes one) is accepted and means nothing. An
empty text matches every ticket.

Unlike ServiceNow, which drops a part it cannot read and then matches every
record, anything that does not parse raises `QueryError` naming the part and
how to fix it: a trigger saved with a typo would otherwise sync everything.

Pure: `EncodedQuery.matches` takes a plain mapping of field values, so any
tracker (and the ServiceNow emulator) evaluates the same syntax the same way.
The emulator parses with `lenient=True`, as ServiceNow reads a query: a
condition or an ORDERBY naming a field the table lacks is dropped (so
`bogus=1` alone matches every record); nothing else is lenient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from exalate_tui.trackers.adapter import QueryError

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """What a field holds: `name` is "str", "int", "datetime" or "labels"; `choices`, when
    set, are the only values `=`, `!=`, `IN` and `NOT IN` may name."""

    name: str
    choices: tuple[Any, ...] | None = None

    def with_choices(self, choices: Iterable[Any]) -> Kind:
        return Kind(self.name, tuple(choices))


STR = Kind("str")
INT = Kind("int")
DATETIME = Kind("datetime")
LABELS = Kind("labels")

# Longest first where one spelling begins another ("NOT LIKE" and "NOTLIKE" name one operator).
_WORDS = (
    ("ISNOTEMPTY", "ISNOTEMPTY"),
    ("ISEMPTY", "ISEMPTY"),
    ("STARTSWITH", "STARTSWITH"),
    ("ENDSWITH", "ENDSWITH"),
    ("NOTLIKE", "NOTLIKE"),
    ("NOT LIKE", "NOTLIKE"),
    ("NOT IN", "NOT IN"),
    ("LIKE", "LIKE"),
    ("IN", "IN"),
)
_SYMBOLS = ("!=", "<=", ">=", "=", "<", ">")
OPERATORS = (
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "LIKE",
    "NOTLIKE",
    "STARTSWITH",
    "ENDSWITH",
    "IN",
    "NOT IN",
    "ISEMPTY",
    "ISNOTEMPTY",
)
# ServiceNow operators this language does not have, recognised to say so (not "no operator").
_UNSUPPORTED = (
    "INSTANCEOF",  # before IN: it begins with it
    "BETWEEN",
    "ANYTHING",
    "EMPTYSTRING",
    "SAMEAS",
    "NSAMEAS",
    "CONTAINS",
    "DOES NOT CONTAIN",
    "DATEPART",
    "RELATIVE",
    "MORETHAN",
    "LESSTHAN",
    "VALCHANGES",
    "CHANGESFROM",
    "CHANGESTO",
    "DYNAMIC",
    "NOTON",
    "ON",
)
_ORDERING = {"<", "<=", ">", ">="}
_TEXT_ONLY = {"LIKE", "NOTLIKE", "STARTSWITH", "ENDSWITH"}
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_INT = re.compile(r"-?[0-9]+")
_OPERATOR_LIST = ", ".join(OPERATORS)


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str  # one of OPERATORS
    value: Any  # converted to the field's kind; a tuple for IN / NOT IN; None for ISEMPTY
    kind: Kind

    def test(self, values: Mapping[str, Any]) -> bool:
        current = values.get(self.field)
        if self.kind.name == "labels":
            labels = [_fold(label) for label in current or ()]
            if self.operator == "ISEMPTY":
                return not labels
            if self.operator == "ISNOTEMPTY":
                return bool(labels)
            negated = self.operator in ("!=", "NOTLIKE", "NOT IN")
            positive = _POSITIVE[self.operator]
            hit = any(_holds(positive, label, self.value) for label in labels)
            return not hit if negated else hit
        if self.kind.name == "str":
            current = _fold(current or "")
            empty = current == ""
        else:
            if self.kind.name == "datetime" and isinstance(current, str):
                current = _datetime(current)
            elif isinstance(current, datetime) and current.tzinfo is None:
                current = current.replace(tzinfo=UTC)
            empty = current is None
        if self.operator == "ISEMPTY":
            return empty
        if self.operator == "ISNOTEMPTY":
            return not empty
        if self.operator in ("!=", "NOTLIKE", "NOT IN"):
            return not _holds(_POSITIVE[self.operator], current, self.value)
        if empty and self.kind.name != "str":
            return False  # no number or time is below, above or equal to a missing one
        return _holds(self.operator, current, self.value)


_POSITIVE = {
    "=": "=",
    "!=": "=",
    "LIKE": "LIKE",
    "NOTLIKE": "LIKE",
    "IN": "IN",
    "NOT IN": "IN",
    "STARTSWITH": "STARTSWITH",
    "ENDSWITH": "ENDSWITH",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}


def _holds(operator: str, current: Any, value: Any) -> bool:
    if current is None:
        return False
    if operator == "=":
        return bool(current == value)
    if operator == "IN":
        return current in value
    if operator == "LIKE":
        return bool(value in current)
    if operator == "STARTSWITH":
        return bool(current.startswith(value))
    if operator == "ENDSWITH":
        return bool(current.endswith(value))
    if operator == "<":
        return bool(current < value)
    if operator == "<=":
        return bool(current <= value)
    if operator == ">":
        return bool(current > value)
    return bool(current >= value)


@dataclass(frozen=True)
class Order:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class EncodedQuery:
    """A parsed encoded query: `groups` (^NQ) of clauses (^) of alternatives (^OR)."""

    text: str
    groups: tuple[tuple[tuple[Condition, ...], ...], ...]
    order: tuple[Order, ...] = ()

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether a record with these field values (str, int, aware datetime, a list of
        labels; a missing field is empty) satisfies the query. No groups: every record."""
        if not self.groups:
            return True
        return any(
            all(any(condition.test(values) for condition in clause) for clause in group)
            for group in self.groups
        )

    def sort(self, records: Iterable[T], values: Callable[[T], Mapping[str, Any]]) -> list[T]:
        """`records` in the query's ORDERBY order (stable: ties keep the order given)."""
        ordered = list(records)
        for order in reversed(self.order):
            ordered.sort(key=lambda record: _sort_key(values(record).get(order.field)))
            if order.descending:
                # Reversing a stable ascending sort would reverse ties too: sort ties back.
                ordered = _descending(ordered, values, order.field)
        return ordered


def _sort_key(value: Any) -> tuple[int, Any]:
    """Empty values first; text without regard to case; labels as their folded tuple."""
    if value is None or value == "" or value == ():
        return (0, 0)
    if isinstance(value, str):
        return (1, _fold(value))
    if isinstance(value, list | tuple):
        return (1, tuple(_fold(v) for v in value))
    return (1, value)


def _descending(ordered: list[T], values: Callable[[T], Mapping[str, Any]], field: str) -> list[T]:
    runs: list[list[T]] = []
    last: object = object()
    for record in ordered:
        key = _sort_key(values(record).get(field))
        if runs and key == last:
            runs[-1].append(record)
        else:
            runs.append([record])
            last = key
    return [record for run in reversed(runs) for record in run]


def parse(text: str, fields: Mapping[str, Kind], *, lenient: bool = False) -> EncodedQuery:
    """`text` as an `EncodedQuery` over `fields`; `QueryError` says which part is wrong and how.

    `lenient`: drop each condition and ORDERBY on a field not in `fields`, as ServiceNow does
    (for the ServiceNow emulator only: a tracker's own filters and triggers refuse them)."""
    if not isinstance(text, str):
        raise QueryError(f"a query is text, not {type(text).__name__}")
    if not text.strip():
        return EncodedQuery(text, ())
    groups: list[tuple[tuple[Condition, ...], ...]] = []
    order: list[Order] = []
    every = False
    for group_text in text.split("^NQ"):
        pieces = group_text.split("^")
        if pieces and pieces[-1] == "EQ" and len(pieces) > 1:
            pieces.pop()
        clauses: list[list[Condition]] = []
        after_condition = False  # whether the piece just before was a condition
        for index, piece in enumerate(pieces):
            if lenient and _unknown_field(piece, index, fields):
                # ServiceNow drops the part; an ^OR after it then joins the one before.
                continue
            if piece.startswith("ORDERBY"):
                order.append(_order(piece, fields))
                after_condition = False
            elif index > 0 and piece.startswith("OR"):
                if not after_condition and lenient:
                    clauses.append([_condition(piece[2:], fields, shown=piece)])
                    after_condition = True
                    continue
                if not after_condition:
                    raise QueryError(
                        f"{piece!r}: ^OR joins a condition to the one just before it, and "
                        "no condition comes just before; remove the OR or move the part"
                    )
                clauses[-1].append(_condition(piece[2:], fields, shown=piece))
            elif piece == "":
                raise _empty_part(text)
            else:
                clauses.append([_condition(piece, fields, shown=piece)])
                after_condition = True
        if clauses:
            groups.append(tuple(tuple(clause) for clause in clauses))
        elif lenient:
            every = True  # a group with nothing left holds for every record
        elif not group_text.startswith("ORDERBY"):
            raise _empty_part(text)
    return EncodedQuery(text, () if every else tuple(groups), tuple(order))


def _unknown_field(piece: str, index: int, fields: Mapping[str, Kind]) -> bool:
    """Whether `piece` (a condition, ^OR condition or ORDERBY) names a field not in `fields`."""
    if piece.startswith("ORDERBYDESC"):
        return piece[len("ORDERBYDESC") :] not in fields
    if piece.startswith("ORDERBY"):
        return piece[len("ORDERBY") :] not in fields
    if index > 0 and piece.startswith("OR"):
        piece = piece[2:]
    found = _NAME.match(piece)
    return found is not None and found.group() not in fields


def _empty_part(text: str) -> QueryError:
    return QueryError(
        f"{text!r}: an empty part (two separators in a row, or one at the start or the "
        "end); remove the extra ^, ^OR or ^NQ"
    )


def _order(piece: str, fields: Mapping[str, Kind]) -> Order:
    descending = piece.startswith("ORDERBYDESC")
    name = piece[len("ORDERBYDESC") :] if descending else piece[len("ORDERBY") :]
    if name not in fields:
        raise QueryError(
            f"{piece!r}: cannot order by {name!r}, not a field; "
            f"write ORDERBY<field> or ORDERBYDESC<field> with one of {', '.join(fields)}"
        )
    return Order(name, descending)


def _condition(text: str, fields: Mapping[str, Kind], *, shown: str) -> Condition:
    found = _NAME.match(text)
    if found is None:
        raise QueryError(
            f"{shown!r}: a condition starts with a field name ({', '.join(fields)}), "
            "then an operator and a value, e.g. status=new"
        )
    name = found.group()
    if name not in fields:
        raise QueryError(f"{shown!r}: no field {name!r}; the fields are {', '.join(fields)}")
    kind = fields[name]
    rest = text[found.end() :]
    operator, value_text = _operator(rest, shown, name)
    if operator in ("ISEMPTY", "ISNOTEMPTY"):
        if value_text:
            raise QueryError(f"{shown!r}: {operator} takes no value; write {name}{operator} alone")
        return Condition(name, operator, None, kind)
    if kind.name in ("int", "datetime") and operator in _TEXT_ONLY:
        raise QueryError(
            f"{shown!r}: {name} is a {_described(kind)}: {operator} compares text; "
            f"use =, !=, <, <=, >, >=, IN or NOT IN"
        )
    if kind.name == "labels" and operator in _ORDERING:
        raise QueryError(
            f"{shown!r}: {name} is a list of labels, which has no order; use =, !=, LIKE, "
            "NOTLIKE, STARTSWITH, ENDSWITH, IN, NOT IN, ISEMPTY or ISNOTEMPTY"
        )
    if operator in ("IN", "NOT IN"):
        items = value_text.split(",")
        if value_text == "" or any(item == "" for item in items):
            raise QueryError(
                f"{shown!r}: {operator} takes a comma-separated list with no empty item, "
                f"e.g. {name}{operator}{_example_list(kind)}"
            )
        converted = tuple(_value(item, kind, shown, name, operator) for item in items)
        return Condition(name, operator, converted, kind)
    if value_text == "" and (operator != "=" and operator != "!=" or kind.name != "str"):
        raise QueryError(
            f"{shown!r}: {operator} needs a value after it, e.g. {name}{operator}"
            f"{_example(kind)}; to find an empty {name} write {name}ISEMPTY"
        )
    return Condition(name, operator, _value(value_text, kind, shown, name, operator), kind)


def _operator(rest: str, shown: str, name: str) -> tuple[str, str]:
    for symbol in _SYMBOLS:
        if rest.startswith(symbol):
            return symbol, rest[len(symbol) :]
    for word in _UNSUPPORTED[:1]:
        if rest.startswith(word):
            raise _unsupported(shown, word)
    for spelling, operator in _WORDS:
        if rest.startswith(spelling):
            return operator, rest[len(spelling) :]
    for word in _UNSUPPORTED:
        if rest.startswith(word):
            raise _unsupported(shown, word)
    raise QueryError(
        f"{shown!r}: no operator after {name!r}; write one of {_OPERATOR_LIST} "
        f"right after the field, with no space, e.g. {name}=value"
    )


def _unsupported(shown: str, word: str) -> QueryError:
    return QueryError(
        f"{shown!r}: the operator {word} is not supported here; use one of {_OPERATOR_LIST}"
    )


def _value(text: str, kind: Kind, shown: str, name: str, operator: str) -> Any:
    value: Any
    if kind.name == "int":
        if not _INT.fullmatch(text):
            raise QueryError(
                f"{shown!r}: {name} is a {_described(kind)}, and {text!r} is not one; "
                f"write e.g. {name}{operator}{_example(kind)}"
            )
        value = int(text)
    elif kind.name == "datetime":
        parsed = _datetime(text)
        if parsed is None:
            raise QueryError(
                f"{shown!r}: {name} is a date and time, and {text!r} is not one; write "
                f"YYYY-MM-DD or YYYY-MM-DD HH:MM:SS (UTC), e.g. {name}{operator}2024-05-01"
            )
        value = parsed
    else:
        value = _fold(text)
    if kind.choices is not None and operator in ("=", "!=", "IN", "NOT IN"):
        allowed = [_fold(c) if isinstance(c, str) else c for c in kind.choices]
        if value not in allowed:
            raise QueryError(
                f"{shown!r}: {name} is never {text!r}; it is one of "
                f"{', '.join(str(c) for c in kind.choices)}"
            )
    return value


def _datetime(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time; an offset past year 1 or 9999
        return None


def _fold(text: str) -> str:
    return str(text).casefold()


def _described(kind: Kind) -> str:
    if kind.name == "int":
        if kind.choices:
            return f"number ({_span(kind.choices)})"
        return "number"
    return "date and time" if kind.name == "datetime" else kind.name


def _span(choices: Sequence[Any]) -> str:
    numbers = sorted(choices)
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}–{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)


def _example(kind: Kind) -> str:
    if kind.choices:
        return str(kind.choices[0])
    return {"int": "2", "datetime": "2024-05-01", "labels": "vip"}.get(kind.name, "text")


def _example_list(kind: Kind) -> str:
    if kind.choices and len(kind.choices) > 1:
        return f"{kind.choices[0]},{kind.choices[1]}"
    return {"int": "1,2", "datetime": "2024-05-01,2024-05-02"}.get(kind.name, "a,b")
