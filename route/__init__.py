"""The router: many model servers behind one OpenAI-compatible API (the contract: docs/API.md, "Router only")."""

from route.app import create_app
from route.config import RouterConfig

__all__ = ["RouterConfig", "create_app"]
