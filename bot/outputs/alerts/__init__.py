"""Field-control chat alerts: WeCom / DingTalk / Feishu robots and a generic webhook behind a SQLite outbox.

Spec: ../shared/protocols/chat_alerts.md. Data flow::

    AlertSink.send(suggestion) ─► AlertRouter (rules, rooms, min severity, quiet hours)
        ─► Outbox (alert_outbox + alert_outbox_delivery, committed first)
        ─► RobotSender per robot (rate window, digest folding, signing, backoff) ─► Transport (aiohttp)
"""

from bot.outputs.alerts.config import AlertsConfig, MessageFormat, RobotConfig, RobotKind, RoomAlertsConfig
from bot.outputs.alerts.outbox import Delivery, DeliveryState, Outbox
from bot.outputs.alerts.robots import (
    AiohttpTransport,
    HttpRequest,
    HttpResponse,
    Transport,
    TransportError,
    dingtalk_sign,
    feishu_sign,
    short_id,
    webhook_signature,
)
from bot.outputs.alerts.routing import AlertRouter, Route
from bot.outputs.alerts.sender import PLATFORM_LIMITS, Backoff, SlidingWindowLimiter
from bot.outputs.alerts.sink import AlertSink, SinkState, resolve_outbox_path, send_test

__all__ = [
    "PLATFORM_LIMITS",
    "AiohttpTransport",
    "AlertRouter",
    "AlertSink",
    "AlertsConfig",
    "Backoff",
    "Delivery",
    "DeliveryState",
    "HttpRequest",
    "HttpResponse",
    "MessageFormat",
    "Outbox",
    "RobotConfig",
    "RobotKind",
    "RoomAlertsConfig",
    "Route",
    "SinkState",
    "SlidingWindowLimiter",
    "Transport",
    "TransportError",
    "dingtalk_sign",
    "feishu_sign",
    "resolve_outbox_path",
    "send_test",
    "short_id",
    "webhook_signature",
]
