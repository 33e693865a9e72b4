"""Reading a long-poll's answer without decoding and re-encoding each body.

It serves one figure: throughput ≥ 30,000 msg/s of ~1 KB one way
(benchmarks/README.md, throughput). Nodes write a batch in one exact form,
`{"messages":[{"seq":N,"kind":K,"body":B},...],"last_seq":N}`, each body
spliced in as stored; reading that form back keeps each body's text as
sent, so the poller stores it as it came: decoding ~1 KB bodies into
objects and encoding them again would be most of a poll's cost. Each kind
and body is still parsed (`json.JSONDecoder.raw_decode`), so nothing but
JSON is stored. Anything else (another node's spacing or key order) gives
None, and the caller reads it the general way.
"""

from __future__ import annotations

import json
import re

from exalate_tui.transport.streams import Message

_DECODER = json.JSONDecoder()
_PREFIX = '{"messages":['
_MESSAGE_START = re.compile(r'\{"seq":(\d{1,19}),"kind":')
_PLAIN_HEAD = re.compile(r'\{"seq":(\d{1,19}),"kind":"([A-Za-z0-9._:-]{1,100})","body":')
_TAIL = re.compile(r'\],"last_seq":(\d{1,19})\}\s*')


def read_batch(text: str) -> tuple[list[Message], int] | None:
    """The messages and `last_seq` of a batch in the nodes' exact form; else None."""
    if not text.startswith(_PREFIX):
        return None
    at = len(_PREFIX)
    messages: list[Message] = []
    append = messages.append
    decode = _DECODER.raw_decode
    try:
        while text[at] != "]":
            if messages:
                if text[at] != ",":
                    return None
                at += 1
            # Most kinds need no escapes: one match reads seq and kind, and finds the body.
            head = _PLAIN_HEAD.match(text, at)
            if head is not None:
                seq, kind, begin = head.group(1), head.group(2), head.end()
            else:
                start = _MESSAGE_START.match(text, at)
                if start is None:
                    return None
                kind, at = decode(text, start.end())
                if not isinstance(kind, str) or not text.startswith(',"body":', at):
                    return None
                seq, begin = start.group(1), at + len(',"body":')
            _, at = decode(text, begin)  # parsed only to be sure it is JSON, and where it ends
            if text[at] != "}":
                return None
            append(Message(int(seq), kind, text[begin:at]))
            at += 1
        tail = _TAIL.fullmatch(text, at)
    except (IndexError, ValueError, RecursionError):
        return None
    if tail is None:
        return None
    return messages, int(tail.group(1))
