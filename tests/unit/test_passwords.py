from lims.auth.passwords import SecurityPolicy
from lims.config import DEFAULTS

FAST = {
    **DEFAULTS["security"],
    "argon2_time_cost": 1,
    "argon2_memory_kib": 8,
    "argon2_parallelism": 1,
}


def test_hash_is_argon2id_and_verifies():
    policy = SecurityPolicy.from_settings(FAST)
    hashed = policy.hash("a long pass phrase")
    assert hashed.startswith("$argon2id$")
    assert "a long pass phrase" not in hashed
    assert policy.verify(hashed, "a long pass phrase")
    assert not policy.verify(hashed, "a long pass phrasE")
    assert not policy.verify("not a hash", "a long pass phrase")


def test_policy_explains_what_is_wrong():
    policy = SecurityPolicy.from_settings(FAST)
    assert policy.problems("short", username="anna") == ["Use at least 10 characters."]
    assert "Do not use your username in the password." in policy.problems(
        "anna-12345678", username="anna"
    )
    assert "Use more than three different characters." in policy.problems(
        "aaaaaaaaaaaa", username="bo"
    )
    assert policy.problems("tube rack freezer", username="anna") == []
