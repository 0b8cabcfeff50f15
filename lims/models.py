"""Imports every model so that the metadata knows all tables (Alembic, tests)."""

from lims.auth.models import ApiToken, Site, User

__all__ = ["ApiToken", "Site", "User"]
