"""The site's label printers: their configuration and the raw TCP port they take ZPL on.

A printer that does not take the labels raises :class:`PrinterUnreachable`; the caller
(:func:`lims.labels.printing.print_labels`) then records nothing as printed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from flask import current_app

from lims.errors import ConfigurationError, DomainError, ValidationError


class PrinterUnreachable(DomainError):
    """The printer did not take the labels: nothing was recorded as printed."""

    status_code = 503
    code = "printer_unreachable"


def label_settings() -> dict[str, Any]:
    return current_app.config["LIMS"]["labels"]


@dataclass(frozen=True)
class Printer:
    """A network label printer of a site, as configured in ``[labels.printers]``."""

    name: str
    host: str
    port: int
    dpi: int | None
    #: The template kinds its stock takes; empty: any.
    kinds: tuple[str, ...]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def takes(self, template_kind: str) -> bool:
        return not self.kinds or template_kind in self.kinds


def _printer(site_code: str, entry: Any) -> Printer:
    where = f"[labels.printers] {site_code}"
    if not isinstance(entry, dict) or not entry.get("name") or not entry.get("host"):
        raise ValidationError(f"{where}: each printer needs a name and a host.")
    if len(str(entry["name"])) > 80 or len(str(entry["host"])) > 255:
        raise ValidationError(f"{where}: a printer's name is at most 80 characters, its host 255.")
    port, dpi, kinds = entry.get("port", 9100), entry.get("dpi"), entry.get("kinds", [])
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValidationError(f"{where} '{entry['name']}': the port must be a TCP port number.")
    if dpi is not None and (not isinstance(dpi, int) or isinstance(dpi, bool) or dpi <= 0):
        raise ValidationError(f"{where} '{entry['name']}': dpi must be a whole number.")
    if not isinstance(kinds, (list, tuple)) or not all(isinstance(k, str) for k in kinds):
        raise ValidationError(f"{where} '{entry['name']}': kinds must be a list of names.")
    return Printer(str(entry["name"]), str(entry["host"]), port, dpi, tuple(kinds))


def printers_of(site_code: str) -> list[Printer]:
    """The site's printers as configured (a malformed entry is refused, naming it)."""
    entries = label_settings()["printers"].get(site_code, [])
    if not isinstance(entries, list):
        raise ValidationError(f"[labels.printers] {site_code} must be a list of printers.")
    return [_printer(site_code, entry) for entry in entries]


def send_zpl(host: str, port: int, data: bytes, timeout: float) -> None:
    """Send ZPL to a printer's raw port (9100); refuse loudly when it does not take it."""
    if not 0 < timeout <= 300:
        raise ValidationError("[labels] timeout_seconds is a number of seconds from 0 to 300.")
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(data)
    except OSError as exc:  # refused, unreachable, timed out (socket.timeout is an OSError)
        detail = "no answer in time" if isinstance(exc, TimeoutError) else exc.strerror or exc
        raise PrinterUnreachable(
            f"The printer at {host}:{port} could not be reached ({detail}). Nothing was "
            "printed or recorded; check that it is on and connected, or download the labels."
        ) from None


def check_verify_before(settings: dict[str, Any]) -> None:
    """At start-up: every step ``[labels.verify_before]`` names is a step of that kind, so a
    misspelt one ("stor") cannot silently turn the hold off."""
    from lims.custody.domain import TRANSITIONS, Kind

    for kind, steps in settings["labels"]["verify_before"].items():
        known = {action.value for action in TRANSITIONS[Kind(kind)]}
        unknown = [step for step in steps if step not in known]
        if unknown:
            raise ConfigurationError(
                f"[labels.verify_before] {kind}: {', '.join(map(str, unknown))} is not a step "
                f"of {kind} material (one of: {', '.join(sorted(known))})"
            )
