"""Configuration: defaults, then a TOML file, then environment overrides.

The TOML layout is documented key by key in ``config.example.toml``. A site runs with no file
at all: SQLite under the instance folder and a secret key generated once and kept there.
"""

from __future__ import annotations

import copy
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from lims.errors import ConfigurationError


def _timepoint(label: str, day: int, before: int, after: int, *types: str) -> dict[str, Any]:
    """A follow-up timepoint as the configuration writes it (see [followup])."""
    return {"label": label, "day": day, "before": before, "after": after, "types": list(types)}


DEFAULTS: dict[str, Any] = {
    "app": {
        "secret_key": "",
        "instance_path": "",
        "timezone": "Europe/Copenhagen",
        "name": "CAR-T LIMS",
    },
    "database": {
        "url": "",
        "echo": False,
    },
    "security": {
        "session_cookie_secure": False,
        "session_idle_minutes": 30,
        "lockout_threshold": 5,
        "lockout_minutes": 15,
        "min_password_length": 10,
        "argon2_time_cost": 3,
        "argon2_memory_kib": 65536,
        "argon2_parallelism": 2,
        "patient_key": "",
    },
    "custody": {
        "max_minutes_after_thaw": 30,
        "max_minutes_after_thaw_by_product": {},
        "required_qc": [
            "viability",
            "sterility",
            "transduction_efficiency",
            "vector_copy_number",
            "cell_dose",
        ],
        "local_id_digits": 7,
        #: Steps where a second person signs with their own password (one person cannot be both).
        "second_person": {
            "release": True,
            "receive_at_treating_site": True,
            "bedside_check": True,
        },
        #: The same code scanned again within this many seconds is a scanner double-read.
        "double_scan_seconds": 2,
    },
    "shipping": {
        #: Temperature limits [lowest, highest] in °C per shipping condition; a logger reading
        #: outside them puts the shipment's items on hold.
        "limits": {
            "fresh": [2.0, 8.0],
            "ambient": [15.0, 25.0],
            "dry_ice": [-100.0, -60.0],
            "dry_shipper": [-196.0, -150.0],
            "ln2_vapour": [-196.0, -150.0],
        },
        #: Per material type and condition, limits that win over the ones above, e.g.
        #: ``{"leukapheresis": {"fresh": [1.0, 10.0]}}``.
        "limits_by_material": {},
    },
    "storage": {
        #: Whether material on hold may be put into storage (it usually must: a held bag still
        #: needs its LN2 tank); false refuses the placement until the hold is cleared.
        "store_held_material": True,
    },
    "requests": {
        #: How recent the opt-out register check (Vævsanvendelsesregisteret) of a patient must
        #: be for their material to be approved for research.
        "opt_out_check_valid_days": 30,
        #: Studies whose requests also need their access committee's signature: the study (the
        #: episode's protocol) and the usernames of its committee members.
        "access_committee": {},
        #: The most aliquots one request may name.
        "max_lines": 2000,
    },
    "followup": {
        #: The schedule used when the episode's protocol has none of its own: timepoints
        #: relative to infusion (day 0), each with its window and the aliquot types expected.
        "default_schedule": [
            _timepoint("baseline", -7, 21, 2, "pbmc", "plasma", "serum"),
            _timepoint("D0", 0, 0, 0, "pbmc", "plasma"),
            _timepoint("D7", 7, 1, 2, "pbmc", "plasma"),
            _timepoint("D14", 14, 2, 2, "pbmc", "plasma"),
            _timepoint("D21", 21, 3, 3, "pbmc", "plasma"),
            _timepoint("D28", 28, 3, 3, "pbmc", "plasma", "serum"),
            _timepoint("M3", 90, 14, 14, "pbmc", "plasma", "serum"),
            _timepoint("M6", 180, 30, 30, "pbmc", "plasma", "serum"),
            _timepoint("M12", 365, 30, 30, "pbmc", "plasma", "serum"),
        ],
        #: After the last timepoint above, one a year (Y2, Y3, ...) up to this year.
        "yearly_until": 15,
        "yearly_window_days": 60,
        "yearly_types": ["pbmc", "plasma", "serum"],
        #: Schedules per protocol (the episode's protocol name = a list like the default).
        "protocols": {},
    },
    "labels": {
        #: A folder of the site's own label templates (*.toml), read after the project's
        #: ``labels/`` folder: a file there adds a template, or replaces one of the same name.
        "extra_folder": "",
        #: Zebra printers per site code: a list of {name, host, port (9100), dpi, kinds}, where
        #: kinds are the template kinds the printer's stock takes (cryovial, product_bag, ...).
        "printers": {},
        #: How long to wait for a printer to accept a connection and the label data.
        "timeout_seconds": 5.0,
        #: Per kind of material, the custody steps refused after a label is printed until it
        #: is scanned back on the bench (material never labelled here is not held back).
        "verify_before": {
            "apheresis": ["store", "ship"],
            "product_bag": ["release", "ship", "store"],
            "aliquot": ["store", "hand_over", "distribute"],
        },
    },
    "mail": {
        #: The SMTP server for e-mail copies of inbox notifications; empty sends no e-mail.
        "host": "",
        "port": 25,
        #: The From address of every message.
        "sender": "lims@localhost",
        #: Upgrade the connection with STARTTLS before logging in or sending.
        "starttls": False,
        #: Log in with these when a username is given.
        "username": "",
        "password": "",
        #: Seconds to wait for the server to answer (a slow server never holds a page long).
        "timeout_seconds": 10.0,
    },
    "server": {
        "bind": "127.0.0.1:8000",
        "workers": 2,
    },
}

#: Environment variables that override one key each (they win over the file).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "LIMS_DATABASE_URL": ("database", "url"),
    "LIMS_SECRET_KEY": ("app", "secret_key"),
    "LIMS_INSTANCE_PATH": ("app", "instance_path"),
    "LIMS_PATIENT_KEY": ("security", "patient_key"),
    "LIMS_MAIL_HOST": ("mail", "host"),
    "LIMS_MAIL_USERNAME": ("mail", "username"),
    "LIMS_MAIL_PASSWORD": ("mail", "password"),
}

SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name)


def _merge(base: dict[str, Any], override: dict[str, Any], path: str = "") -> None:
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigurationError(f"unknown configuration key '{where}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigurationError(f"'{where}' must be a table")
            if not base[key]:  # an open table (e.g. one value per product): taken as it is
                base[key] = dict(value)
            else:
                _merge(base[key], value, f"{where}.")
        else:
            expected = type(base[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # TOML writes -150 for -150.0
            if expected is int and isinstance(value, bool):
                raise ConfigurationError(f"'{where}' must be a whole number")
            if not isinstance(value, expected):
                raise ConfigurationError(
                    f"'{where}' must be {expected.__name__}, not {type(value).__name__}"
                )
            base[key] = value


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the merged settings: defaults < TOML file < environment < ``overrides``."""
    environ = os.environ if environ is None else environ
    settings = copy.deepcopy(DEFAULTS)
    path = config_path or environ.get("LIMS_CONFIG")
    if path:
        file = Path(path)
        try:
            with file.open("rb") as handle:
                _merge(settings, tomllib.load(handle))
        except FileNotFoundError:
            raise ConfigurationError(f"configuration file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"configuration file {file}: {exc}") from None
        except ConfigurationError as exc:
            raise ConfigurationError(f"configuration file {file}: {exc}") from None
    for variable, (section, key) in ENV_OVERRIDES.items():
        if environ.get(variable):
            settings[section][key] = environ[variable]
    if overrides:
        _merge(settings, overrides)
    _check_mail(settings["mail"])
    _check_requests(settings["requests"])
    return settings


def _check_requests(section: dict[str, Any]) -> None:
    if not 1 <= section["opt_out_check_valid_days"] <= 3650:
        raise ConfigurationError("'requests.opt_out_check_valid_days' must be 1 to 3650")
    if not 1 <= section["max_lines"] <= 100_000:
        raise ConfigurationError("'requests.max_lines' must be 1 to 100000")
    for study, members in section["access_committee"].items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigurationError(
                f"'requests.access_committee.{study}' must be a list of usernames"
            )


def _check_mail(mail: dict[str, Any]) -> None:
    """Refuse at start a [mail] section that could only fail when the first message goes out."""
    if not 1 <= mail["port"] <= 65535:
        raise ConfigurationError("'mail.port' must be between 1 and 65535")
    if not 0 < mail["timeout_seconds"] <= 300:
        raise ConfigurationError("'mail.timeout_seconds' must be more than 0 and at most 300")
    for key in ("host", "sender", "username"):
        if any(character.isspace() for character in mail[key]):
            raise ConfigurationError(f"'mail.{key}' must not hold spaces or line breaks")
    sender = mail["sender"]
    if sender.count("@") != 1 or sender.startswith("@") or sender.endswith("@"):
        raise ConfigurationError("'mail.sender' must be an e-mail address such as lims@example.org")
    if mail["password"] and not mail["username"]:
        raise ConfigurationError("'mail.password' is set but 'mail.username' is empty")


def resolve_secret_key(settings: dict[str, Any], instance_path: Path) -> str:
    """The configured key, or one generated on first start and kept in the instance folder."""
    if settings["app"]["secret_key"]:
        return settings["app"]["secret_key"]
    key_file = instance_path / SECRET_KEY_FILE
    if key_file.exists():
        return key_file.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    # Created with owner-only permissions from the start, never world-readable.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def default_database_url(instance_path: Path) -> str:
    return f"sqlite:///{instance_path / 'lims.sqlite'}"
