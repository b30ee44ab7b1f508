"""A WebSocket test communicator on asgiref's ApplicationCommunicator.

Same calls as ``channels.testing.WebsocketCommunicator``; that module cannot be imported
without daphne (``channels.testing`` imports its live server), which the portal does not use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

from asgiref.testing import ApplicationCommunicator

__all__ = ["WebsocketCommunicator"]


class WebsocketCommunicator(ApplicationCommunicator):
    def __init__(self, application: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None,
                 subprotocols: list[str] | None = None, scheme: str = "wss") -> None:
        parsed = urlparse(path)
        scope = {
            "type": "websocket", "scheme": scheme, "path": unquote(parsed.path), "query_string": parsed.query.encode(),
            "headers": headers or [], "subprotocols": subprotocols or [], "client": ("127.0.0.1", 50000),
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """(True, subprotocol) when accepted, (False, close code) when refused."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept"
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def disconnect(self, code: int = 1000, timeout: float = 5) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
