"""This instance (`instance.toml`): where its node listens follows a loopback public URL."""

from __future__ import annotations

import pytest

from exalate_tui.domain.models import Instance


@pytest.mark.parametrize(
    ("public_url", "port"),
    [
        ("http://127.0.0.1:18471", 18471),  # a trial on one machine: partners call there
        ("http://localhost:9000/exalate", 9000),
        ("http://127.0.0.1", 7917),  # no port given: the default
        ("https://snow.example.com:8443", 7917),  # a proxy in front: it forwards
        ("http://127.evil.example:99", 7917),  # a name that only starts like the loopback
        (None, 7917),
    ],
)
def test_the_node_listens_where_a_loopback_public_url_points(
    public_url: str | None, port: int
) -> None:
    assert Instance(short_name="snow", public_url=public_url).listen_port == port


def test_a_listen_port_given_is_kept() -> None:
    instance = Instance(short_name="snow", public_url="http://127.0.0.1:18471", listen_port=7000)
    assert instance.listen_port == 7000
