"""livebot: live-room operations assistant for Chinese live-commerce broadcasts."""

__version__ = "0.1.0"
