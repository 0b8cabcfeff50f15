"""The site's time zone: times are stored in UTC and shown, typed and exported in local time."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import current_app


def site_zone() -> ZoneInfo:
    """The configured zone (``app.timezone``, Europe/Copenhagen by default)."""
    return ZoneInfo(current_app.config["LIMS"]["app"]["timezone"])
