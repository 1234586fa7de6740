"""Package data: the embedded default config (installed as `livebot_config`)."""
