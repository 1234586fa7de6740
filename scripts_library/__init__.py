"""Package data: the shipped run-sheets (installed as `livebot_scripts`); format in README.md."""
