"""Host screen and field-control view: an aiohttp app with a websocket hub (DESIGN.md *Sinks*)."""

from bot.outputs.screen.actions import RoomActions
from bot.outputs.screen.app import ScreenServer, make_app
from bot.outputs.screen.hub import Hub

__all__ = ["Hub", "RoomActions", "ScreenServer", "make_app"]
