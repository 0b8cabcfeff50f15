import os
import stat

import pytest

from lims.config import load_settings, resolve_secret_key
from lims.errors import ConfigurationError


def test_defaults_need_no_file():
    settings = load_settings(environ={})
    assert settings["database"]["url"] == ""
    assert settings["security"]["lockout_threshold"] == 5
    assert settings["security"]["lockout_minutes"] == 15


def test_file_then_environment_then_overrides(tmp_path):
    config = tmp_path / "lims.toml"
    config.write_text(
        '[database]\nurl = "sqlite:///from-file.sqlite"\n'
        "[security]\nlockout_threshold = 3\n"
        '[app]\nsecret_key = "from-file"\n'
    )
    settings = load_settings(
        environ={"LIMS_CONFIG": str(config), "LIMS_SECRET_KEY": "from-env"},
        overrides={"security": {"lockout_minutes": 30}},
    )
    assert settings["database"]["url"] == "sqlite:///from-file.sqlite"
    assert settings["app"]["secret_key"] == "from-env"
    assert settings["security"]["lockout_threshold"] == 3
    assert settings["security"]["lockout_minutes"] == 30


def test_database_url_from_environment_wins_over_file(tmp_path):
    config = tmp_path / "lims.toml"
    config.write_text('[database]\nurl = "sqlite:///file.sqlite"\n')
    settings = load_settings(config, environ={"LIMS_DATABASE_URL": "postgresql://db/lims"})
    assert settings["database"]["url"] == "postgresql://db/lims"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[database]\nurll = 'x'\n", "unknown configuration key 'database.urll'"),
        ("[security]\nlockout_threshold = 'five'\n", "'security.lockout_threshold' must be int"),
        ("[security]\nlockout_threshold = true\n", "must be a whole number"),
        ("database = 3\n", "'database' must be a table"),
        ("[database\n", "lims.toml"),
    ],
)
def test_malformed_configuration_names_the_key(tmp_path, content, message):
    config = tmp_path / "lims.toml"
    config.write_text(content)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        load_settings(config, environ={})


def test_missing_configuration_file_is_reported(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_example_configuration_is_complete_and_valid():
    """config.example.toml documents every key and loads as it is."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    example = os.path.join(root, "config.example.toml")
    settings = load_settings(example, environ={})
    with open(example, encoding="utf-8") as handle:
        text = handle.read()
    for section, keys in settings.items():
        assert f"[{section}]" in text
        for key, value in keys.items():
            documented = (f"\n{key} =", f"\n# {key} =", f"[{section}.{key}]")
            assert any(form in text for form in documented), f"{section}.{key} undocumented"
            if isinstance(value, dict):
                assert f"[{section}.{key}]" in text


def test_secret_key_is_generated_once_and_kept_private(tmp_path):
    settings = load_settings(environ={})
    first = resolve_secret_key(settings, tmp_path)
    second = resolve_secret_key(settings, tmp_path)
    assert first == second
    assert len(first) >= 64
    mode = stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode)
    assert mode == 0o600


def test_configured_secret_key_is_used_as_is(tmp_path):
    settings = load_settings(environ={"LIMS_SECRET_KEY": "configured"})
    assert resolve_secret_key(settings, tmp_path) == "configured"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"opt_out_check_valid_days": 0}, "opt_out_check_valid_days"),
        ({"max_lines": 0}, "max_lines"),
        ({"access_committee": {"CART-01": "anna"}}, "access_committee.CART-01"),
        ({"access_committee": {"CART-01": ["anna", 3]}}, "access_committee.CART-01"),
    ],
)
def test_a_malformed_requests_section_stops_the_start(tmp_path, section, message):
    with pytest.raises(ConfigurationError, match=message):
        load_settings(overrides={"requests": section})
