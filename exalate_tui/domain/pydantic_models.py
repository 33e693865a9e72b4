"""The pydantic models of `instance.toml` and `connections/<id>.toml` (DESIGN.md, contract).

Reached through `models` (`from .models import Connection`), which imports this
module on first use: the rules they apply are `models`' checks.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from exalate_tui.domain.models import (
    CONNECTION_NAME_MAX,
    DESCRIPTION_MAX,
    Mode,
    PeerState,
    Role,
    Status,
    Topology,
    check_short_name,
    check_text,
    check_url,
    utcnow,
)
from exalate_tui.domain.topology import side

ShortName = Annotated[str, AfterValidator(check_short_name)]
ConnectionName = Annotated[
    str, AfterValidator(lambda v: check_text(v, limit=CONNECTION_NAME_MAX, required=True))
]
Description = Annotated[
    str, AfterValidator(lambda v: check_text(v, limit=DESCRIPTION_MAX, required=False))
]
Url = Annotated[str, AfterValidator(check_url)]


class Instance(BaseModel):
    """This instance: `instance.toml`."""

    model_config = ConfigDict(extra="forbid")

    short_name: ShortName
    public_url: Url | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=7917, ge=1, le=65535)


class Connection(BaseModel):
    """One connection: `connections/<id>.toml` (0600, it holds secrets)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    name: ConnectionName
    description: Description = ""
    mode: Mode
    topology: Topology
    role: Role
    local_name: ShortName
    remote_name: ShortName | None = None
    # The other side's URL when it has one; None when it is private.
    remote_url: Url | None = None
    created: datetime = Field(default_factory=utcnow)
    status: Status = Status.PENDING
    # Invitation state: the side that receives the handshake holds the hash.
    token_hash: str | None = None
    # Only a private initiator keeps the token: it must present it itself.
    token: SecretStr | None = None
    token_expires: datetime | None = None
    # `invitation.digest` of the code: the handshake must present it (a changed code is refused).
    code_digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    secret: SecretStr | None = None
    # None while the other side has nothing to report (see PeerState).
    peer_state: PeerState | None = None

    @property
    def is_private_here(self) -> bool:
        """True when this side has no URL: it makes every HTTP request (it polls)."""
        return side(self.topology, self.role).polls
