"""The encoded-query parser: ServiceNow's meanings, and a clear refusal of anything else."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exalate_tui.trackers.adapter import QueryError
from exalate_tui.trackers.query import DATETIME, INT, LABELS, STR, EncodedQuery, parse

FIELDS = {
    "key": STR,
    "summary": STR,
    "status": STR.with_choices(["new", "in_progress", "closed"]),
    "priority": INT.with_choices([1, 2, 3, 4, 5]),
    "count": INT,
    "labels": LABELS,
    "created": DATETIME,
}

TICKET: dict[str, Any] = {
    "key": "SNOW-7",
    "summary": "Network outage in Berlin",
    "status": "new",
    "priority": 2,
    "count": None,
    "labels": ["vip", "Network"],
    "created": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
}


def matches(text: str, values: dict[str, Any] | None = None) -> bool:
    return parse(text, FIELDS).matches(TICKET if values is None else values)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status=new", True),
        ("status=NEW", True),  # text compares ignoring case
        ("status!=new", False),
        ("priority=2", True),
        ("priority<=2", True),
        ("priority<2", False),
        ("priority>=2", True),
        ("priority>2", False),
        ("summaryLIKEoutage", True),
        ("summaryLIKEOUTAGE", True),
        ("summaryNOTLIKEoutage", False),
        ("summaryNOT LIKEoutage", False),
        ("summarySTARTSWITHnetwork", True),
        ("summaryENDSWITHberlin", True),
        ("summaryENDSWITHnetwork", False),
        ("summary=Network outage in Berlin", True),  # a value may hold spaces
        ("statusINnew,closed", True),
        ("statusNOT INnew,closed", False),
        ("priorityIN1,3", False),
        ("countISEMPTY", True),
        ("countISNOTEMPTY", False),
        ("count!=3", True),  # != is the negation of =: an empty field is not 3
        ("count<3", False),  # ...but nothing is below an empty number
        ("summaryISEMPTY", False),
        ("labels=vip", True),
        ("labels=VIP", True),
        ("labels!=vip", False),
        ("labels=other", False),
        ("labelsLIKEwork", True),
        ("labelsINother,network", True),
        ("labelsNOT INother,network", False),
        ("labelsISEMPTY", False),
        ("created>2024-05-01", True),
        ("created>2024-05-01 12:00:00", False),
        ("created>=2024-05-01 12:00:00", True),
        ("created<2024-05-01T13:00:00+02:00", False),  # 11:00 UTC
        ("createdISNOTEMPTY", True),
        ("key=snow-7", True),
        ("", True),  # no filter: everything
        ("status=new^priority=1", False),
        ("status=new^priority=1^ORpriority=2", True),
        ("status=closed^priority=1^ORpriority=2", False),
        ("status=closed^NQpriority=2", True),
        ("status=closed^NQpriority=1^NQlabels=vip", True),
        ("status=new^EQ", True),  # ServiceNow's filter builder ends a query with ^EQ
        ("ORDERBYpriority", True),
    ],
)
def test_operators_mean_what_servicenow_says(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_or_binds_to_the_condition_just_before_it() -> None:
    # a^b^ORc = a AND (b OR c), never (a AND b) OR c.
    query = parse("status=closed^priority=1^ORpriority=2", FIELDS)
    assert [len(clause) for clause in query.groups[0]] == [1, 2]
    assert not query.matches(TICKET)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("priority<=high", ["'priority<=high'", "number (1–5)", "priority<=1"]),
        ("bogus=1", ["'bogus=1'", "no field 'bogus'", "key, summary, status"]),
        ("Summary=x", ["'Summary=x'", "starts with a field name"]),
        ("summaryCONTAINSx", ["'summaryCONTAINSx'", "CONTAINS is not supported", "LIKE"]),
        ("priorityBETWEEN1@3", ["BETWEEN is not supported"]),
        ("summaryINSTANCEOFtask", ["INSTANCEOF is not supported"]),
        ("summary~x", ["no operator after 'summary'", "ISNOTEMPTY"]),
        ("status=bogus", ["'status=bogus'", "new, in_progress, closed"]),
        ("statusINnew,bogus", ["never 'bogus'"]),
        ("priority=9", ["never '9'", "1, 2, 3, 4, 5"]),
        ("priorityIN1,,2", ["no empty item"]),
        ("priorityIN", ["comma-separated list"]),
        ("priorityLIKE1", ["priority is a number", "LIKE compares text"]),
        ("labels<x", ["has no order"]),
        ("created>yesterday", ["'yesterday' is not one", "YYYY-MM-DD"]),
        ("created>", ["needs a value", "createdISEMPTY"]),
        ("summaryLIKE", ["needs a value"]),
        ("summaryISEMPTYx", ["ISEMPTY takes no value"]),
        ("status=new^^priority=1", ["an empty part"]),
        ("status=new^", ["an empty part"]),
        ("status=new^NQ", ["an empty part"]),
        ("ORDERBYbogus", ["cannot order by 'bogus'"]),
        ("ORDERBYpriority^ORstatus=new", ["^OR joins a condition", "no condition"]),
        ("priority=1.5", ["'1.5' is not one"]),
    ],
)
def test_a_bad_part_is_refused_with_the_part_and_the_fix(text: str, says: list[str]) -> None:
    with pytest.raises(QueryError) as refused:
        parse(text, FIELDS)
    for words in says:
        assert words in str(refused.value)


def test_the_source_text_and_the_order_are_kept() -> None:
    query = parse("status=new^ORDERBYDESCpriority^ORDERBYkey", FIELDS)
    assert query.text == "status=new^ORDERBYDESCpriority^ORDERBYkey"
    rows: list[dict[str, Any]] = [
        {"key": "b", "priority": 1},
        {"key": "a", "priority": 3},
        {"key": "c", "priority": 3},
        {"key": "d", "priority": None},
    ]
    ordered = query.sort(rows, lambda row: row)
    assert [row["key"] for row in ordered] == ["a", "c", "b", "d"]


def test_values_given_as_text_or_naive_times_compare_as_utc() -> None:
    query = parse("created<2024-05-01 13:00:00", FIELDS)
    assert query.matches({"created": "2024-05-01T12:30:00+00:00"})
    assert query.matches({"created": datetime(2024, 5, 1, 12, 30)})
    assert not query.matches({"created": None})
    assert not query.matches({})


# -- properties -------------------------------------------------------------------


@given(st.text())
def test_parse_raises_nothing_but_query_error(text: str) -> None:
    try:
        query = parse(text, FIELDS)
    except QueryError as error:
        assert str(error)
        return
    query.matches(TICKET)
    query.matches({})


_PIECES = st.sampled_from(
    [
        "^",
        "^OR",
        "^NQ",
        "^EQ",
        "ORDERBY",
        "DESC",
        "status",
        "priority",
        "labels",
        "created",
        "summary",
        "=",
        "!=",
        "<=",
        "LIKE",
        "IN",
        "NOT IN",
        "ISEMPTY",
        "new",
        "2",
        "1,2",
        "2024-05-01",
        ",",
        "vip",
    ]
)


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_parse_raises_nothing_but_query_error_on_near_misses(text: str) -> None:
    with contextlib.suppress(QueryError):
        parse(text, FIELDS).matches(TICKET)


# Conditions with a reference meaning, to check how ^, ^OR and ^NQ combine them.
_ATOMS = {
    "status=new": lambda v: v["status"] == "new",
    "status!=new": lambda v: v["status"] != "new",
    "priority<=2": lambda v: v["priority"] <= 2,
    "priority>3": lambda v: v["priority"] > 3,
    "labels=vip": lambda v: "vip" in v["labels"],
    "summaryLIKEnet": lambda v: "net" in v["summary"].casefold(),
}
_VALUES = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["new", "in_progress", "closed"]),
        "priority": st.integers(1, 5),
        "labels": st.lists(st.sampled_from(["vip", "ops"]), max_size=2),
        "summary": st.sampled_from(["network", "disk", "Netflix"]),
    }
)
# A query as groups (^NQ) of clauses (^) of alternatives (^OR).
_QUERIES = st.lists(
    st.lists(st.lists(st.sampled_from(sorted(_ATOMS)), min_size=1, max_size=3), min_size=1),
    min_size=1,
    max_size=3,
)


@given(_QUERIES, _VALUES)
def test_and_or_and_new_query_combine_as_servicenow_does(
    groups: list[list[list[str]]], values: dict[str, Any]
) -> None:
    text = "^NQ".join("^".join("^OR".join(clause) for clause in group) for group in groups)
    expected = any(
        all(any(_ATOMS[atom](values) for atom in clause) for clause in group) for group in groups
    )
    query: EncodedQuery = parse(text, FIELDS)
    assert query.matches(values) is expected


# -- lenient, as ServiceNow reads a query (the emulator's mode) ----------------------


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("bogus=1", True),  # dropped: every record
        ("bogus=1^priority=3", False),
        ("bogus=1^ORpriority=2", True),  # the ^OR joins nothing: it stands alone
        ("priority=3^ORbogus=1", False),
        ("priority=3^NQbogus=1", True),  # a group with nothing left holds for all
        ("priority=2^ORDERBYbogus", True),
    ],
)
def test_lenient_drops_conditions_on_unknown_fields(text: str, holds: bool) -> None:
    query = parse(text, FIELDS, lenient=True)
    assert query.matches(TICKET) is holds
    assert all(order.field in FIELDS for order in query.order)


def test_lenient_still_refuses_what_does_not_parse_on_a_known_field() -> None:
    with pytest.raises(QueryError):
        parse("priority=high", FIELDS, lenient=True)
