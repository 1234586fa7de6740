"""Package data: run-sheets (installed as `livebot_scripts`)."""
