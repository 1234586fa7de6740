"""Debian's Chromium driven by Python playwright: the one launch recipe every browser test uses.

These flags are the combination known to work as root on machines with no outside network: without the
background-networking ones Chromium keeps trying (and failing) to reach Google's hosts.
"""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DEFAULT_VIEWPORT = {"width": 1920, "height": 1080}

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's /usr/bin/chromium")
