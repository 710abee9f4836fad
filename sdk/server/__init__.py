"""``vptt serve``: the SDK over HTTP (FastAPI; optional extra ``vptt[serve]``) and the creator web page.

Example:
    >>> from vptt.sdk.server import ServeConfig, create_app                     # doctest: +SKIP
    >>> app = create_app(ServeConfig())  # uvicorn.run(app, host="127.0.0.1", port=8765)
"""

from vptt.sdk.server.app import create_app
from vptt.sdk.server.config import ServeConfig, TokenGrant, load_tokens
from vptt.sdk.server.service import Service

__all__ = ["ServeConfig", "Service", "TokenGrant", "create_app", "load_tokens"]
