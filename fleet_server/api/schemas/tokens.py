"""API token request/response models."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fleet_server.api.schemas.common import StrictModel

TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$"
TokenName = Annotated[str, StringConstraints(pattern=TOKEN_NAME_PATTERN)]
RoleName = Literal["viewer", "operator", "admin"]


class TokenCreate(StrictModel):
    name: TokenName = Field(description="Unique; recorded as the actor in the audit log.")
    role: RoleName


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: RoleName
    prefix: str = Field(description="First characters of the token, to recognise it.")
    created_by: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenIssued(BaseModel):
    token: TokenOut
    secret: str = Field(description="The bearer token. Shown only in this response.")
