"""The registration body (POST /backends/register, a `[[backends]]` entry, a state-file line).

The router validates it; the model server (--router) and the stack's supervisor build it with `registration()`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hearth_common.capabilities import Capability
from hearth_common.names import BACKEND_NAME


class Registration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128, pattern=BACKEND_NAME)
    url: str = Field(min_length=1, max_length=2048)
    model_type: str = Field(default="generic", max_length=64)
    models: list[str] = Field(min_length=1, max_length=256)
    weight: float = Field(default=1.0, gt=0, le=1000)
    capabilities: list[Capability] | None = Field(
        default=None, max_length=4, description="what its models do (hearth_common/capabilities.py); None: not said"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError:
            raise ValueError("url has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        if "@" in parts.netloc:  # a key in a URL ends up in logs and state files
            raise ValueError("url must not carry a user name or password")
        if parts.query or parts.fragment:
            raise ValueError("url must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("models")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not m or len(m) > 256 for m in value):
            raise ValueError("model names must be 1 to 256 characters")
        return list(dict.fromkeys(value))  # drop duplicates, keep order


def registration(
    name: str,
    url: str,
    model_type: str,
    models: list[str],
    weight: float = 1.0,
    capabilities: list[Capability] | None = None,
) -> dict[str, Any]:
    """The JSON body that registers one server (validated here, so a sender finds its own mistakes)."""
    return Registration(
        name=name, url=url, model_type=model_type, models=models, weight=weight, capabilities=capabilities
    ).model_dump(exclude_none=True)
