"""Unit tests for lims.identifiers against DOMAIN.md section 3 (Identifiers).

Expected values come from the DOMAIN.md tables, from dates worked out by hand, or from the
reference Mod 37-2 below, which is DOMAIN.md's pseudocode written out independently of the module.
"""

from __future__ import annotations

import random
from datetime import date, datetime

import pytest

from lims.identifiers import (
    ChainOfIdentity,
    Din,
    IdentifierError,
    LocalId,
    ScanKind,
    coi_check_character,
    din_check_character,
    expect,
    eye_readable,
    format_coi,
    format_cpr,
    format_local_id,
    mod37_2_check_character,
    mod37_2_checksum,
    normalise_cpr,
    parse_coi,
    parse_cpr,
    parse_din,
    parse_local_id,
    parse_scan,
)

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"


def ref_checksum(data: str) -> int:
    """DOMAIN.md section 3 pseudocode, verbatim."""
    s = 0
    for ch in data:
        s = ((s + CHARSET.index(ch)) * 2) % 37
    return (38 - s) % 37


def ref_check(data: str) -> str:
    return CHARSET[ref_checksum(data)]


def iso7064_valid(full: str) -> bool:
    """ISO/IEC 7064 pure-system verification: sum of a_i * 2^(i-1) from the right is 1 mod 37."""
    n = len(full)
    return sum(CHARSET.index(ch) * pow(2, n - 1 - i, 37) for i, ch in enumerate(full)) % 37 == 1


def ref_mod11(cpr10: str) -> bool:
    return (
        sum(int(d) * w for d, w in zip(cpr10, (4, 3, 2, 7, 6, 5, 4, 3, 2, 1), strict=True)) % 11
        == 0
    )


DIN_VECTORS = [
    ("G123417654321", 10, "A"),
    ("G123498654321", 17, "H"),
    ("A999921123456", 3, "3"),
    ("W000009123456", 16, "G"),
]
PRODUCT = "=<S1234V00"
EXPIRY = "&>0251232359"  # 2025, day 123 = 31+28+31+30 + 3 -> 3 May, 23:59
EXPIRY_AT = datetime(2025, 5, 3, 23, 59)
COI_VALUE = "CHW000009A1B2C3"
COI_K = ref_check(COI_VALUE)
DIN_SCAN = "=W00000912345600"


def refused(func, *args, **kwargs) -> IdentifierError:
    with pytest.raises(IdentifierError) as info:
        func(*args, **kwargs)
    assert str(info.value)  # a message a person can read
    return info.value


# --- Mod 37-2 --------------------------------------------------------------------------------


@pytest.mark.parametrize(("din", "c", "k"), DIN_VECTORS)
def test_din_vector_table(din: str, c: int, k: str) -> None:
    assert ref_checksum(din) == c  # the reference agrees with the table
    assert mod37_2_checksum(din) == c
    assert mod37_2_check_character(din) == k
    assert din_check_character(din) == k
    assert iso7064_valid(din + k)


def test_mod37_2_agrees_with_iso_7064_on_random_data() -> None:
    rng = random.Random(7064)  # noqa: S311 - reproducible test data
    for _ in range(300):
        data = "".join(rng.choice(CHARSET[:36]) for _ in range(rng.randint(1, 20)))
        assert iso7064_valid(data + mod37_2_check_character(data)), data


def test_mod37_2_catches_every_single_substitution() -> None:
    din, k = "W000009123456", "G"
    for i, original in enumerate(din):
        for ch in CHARSET[:36]:
            if ch != original:
                assert mod37_2_check_character(din[:i] + ch + din[i + 1 :]) != k


@pytest.mark.parametrize("data", ["", "AB*1", "ab12", "A-1", "A 1"])
def test_mod37_2_refuses_characters_outside_charset(data: str) -> None:
    refused(mod37_2_checksum, data)


def test_identifier_error_is_value_error_with_code() -> None:
    err = refused(parse_din, "W000009123456H", scanned=False)
    assert isinstance(err, ValueError)
    assert err.code == "bad_check_character"


# --- DIN -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "W000009123456G",
        "W0000 09 123456 G",
        "W0000-09-123456-G",
        "  w0000 09 123456 g\r\n",
    ],
)
def test_typed_din_with_right_check_character(typed: str) -> None:
    assert parse_din(typed, scanned=False) == Din("W000009123456", None, "G")


@pytest.mark.parametrize(("din", "c", "k"), DIN_VECTORS)
def test_typed_din_vectors_and_every_wrong_check_character(din: str, c: int, k: str) -> None:
    assert parse_din(din + k, scanned=False).check == k
    for wrong in CHARSET.replace(k, ""):
        err = refused(parse_din, din + wrong, scanned=False)
        assert err.code == "bad_check_character"
        assert f"should be {k}" in str(err)


def test_typed_din_without_check_character_refused() -> None:
    err = refused(parse_din, "W0000 09 123456", scanned=False)
    assert err.code == "missing_check_character"


@pytest.mark.parametrize(
    "typed", ["W0000 09 123456 02 G", DIN_SCAN, "W00000912345G", "W0000091234567G"]
)
def test_typed_din_wrong_shape_refused(typed: str) -> None:
    refused(parse_din, typed, scanned=False)


@pytest.mark.parametrize(
    ("text", "scanned"),
    [
        ("WO00009123456G", False),
        ("O00009123456", False),
        ("=WO0000912345600", True),
        ("=O123417654321", True),
        ("=O12341765432100", True),
    ],
)
def test_letter_o_in_din_refused(text: str, scanned: bool) -> None:
    err = refused(parse_din, text, scanned=scanned)
    if len(text.replace("=", "")) in (14, 16):
        assert "letter O" in str(err)


def test_scanned_din_needs_no_check_character() -> None:
    din = parse_din(DIN_SCAN, scanned=True)
    assert din == Din("W000009123456", "00", "G")
    assert (din.fin, din.year, din.sequence) == ("W0000", "09", "123456")


def test_scanned_din_lowercase_and_enter_normalised() -> None:
    assert parse_din("=w00000912345602\r\n", scanned=True) == Din("W000009123456", "02", "G")


def test_eye_readable_din_as_in_domain() -> None:
    din = parse_din("=W00000912345602", scanned=True)
    assert din.eye_readable == "W0000 09 123456 02"
    assert parse_din("W000009123456G", scanned=False).eye_readable == "W0000 09 123456"


@pytest.mark.parametrize(("din", "c", "k"), DIN_VECTORS)
def test_scanned_din_checksum_flag(din: str, c: int, k: str) -> None:
    parsed = parse_din(f"={din}{60 + c}", scanned=True)
    assert (parsed.din, parsed.flags, parsed.check) == (din, str(60 + c), k)
    assert parsed.eye_readable == f"{din[:5]} {din[5:7]} {din[7:]}"  # never printed
    wrong = 60 + (c + 1) % 37
    err = refused(parse_din, f"={din}{wrong}", scanned=True)
    assert err.code == "bad_check_character"


@pytest.mark.parametrize(
    "text", ["=W000009123456", "=W0000091234560", "=W000009123456AB", "W00000912345600"]
)
def test_scanned_din_wrong_shape_refused(text: str) -> None:
    refused(parse_din, text, scanned=True)


@pytest.mark.parametrize(
    ("flags", "meaning"),
    [
        ("00", "no flag"),
        ("01", "container 1 of a set"),
        ("04", "container 4 of a set"),
        ("15", "container 5 of a set"),
        ("19", "container 9 of a set"),
        ("05", "reprinted label"),
        ("06", "pilot tube"),
        ("07", "test tube"),
        ("20", "local use"),
        ("59", "local use"),
        ("76", "checksum"),
    ],
)
def test_flag_meaning(flags: str, meaning: str) -> None:
    assert meaning in parse_din(f"=W000009123456{flags}", scanned=True).flag_meaning


def test_product_code_scanned_into_din_field_is_named() -> None:
    err = refused(parse_din, PRODUCT, scanned=True)
    assert "product code" in str(err)
    assert err.code == "wrong_structure"
    err = refused(expect, PRODUCT, ScanKind.DIN)
    assert "product code" in str(err)
    assert "DIN field" in str(err)


# --- Chain of Identity -----------------------------------------------------------------------


def test_coi_scanned() -> None:
    coi = parse_coi(f"&/{COI_VALUE}\r\n", scanned=True)
    assert coi == ChainOfIdentity(COI_VALUE, COI_K)
    assert (coi.fin, coi.year, coi.sequence) == ("W0000", "09", "A1B2C3")
    assert coi_check_character(COI_VALUE) == COI_K
    assert iso7064_valid(COI_VALUE + COI_K)


@pytest.mark.parametrize(
    "typed",
    [COI_VALUE + COI_K, f"CH W0000 09 A1B2C3 {COI_K}", f"ch-w0000-09-a1b2c3-{COI_K}".lower()],
)
def test_coi_typed(typed: str) -> None:
    assert parse_coi(typed, scanned=False) == ChainOfIdentity(COI_VALUE, COI_K)


def test_coi_typed_wrong_or_missing_check_character_refused() -> None:
    for wrong in CHARSET.replace(COI_K, ""):
        assert refused(parse_coi, COI_VALUE + wrong, scanned=False).code == "bad_check_character"
    assert refused(parse_coi, COI_VALUE, scanned=False).code == "missing_check_character"


@pytest.mark.parametrize(
    "text", ["&/CHW000009A1B2C", "&/XXW000009A1B2C3", "&/CHWO00009A1B2C3", DIN_SCAN]
)
def test_coi_scanned_wrong_shape_refused(text: str) -> None:
    refused(parse_coi, text, scanned=True)


def test_format_coi() -> None:
    assert format_coi(COI_VALUE) == f"CH W0000 09 A1B2C3 {COI_K}"
    assert format_coi(ChainOfIdentity(COI_VALUE, COI_K)) == f"CH W0000 09 A1B2C3 {COI_K}"


# --- product code, expiry, compound, scan dispatch ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "division"),
    [("=<S1234V00", "S1234V00", "00"), ("=<s1234vab", "S1234VAb", "Ab")],
)
def test_product_code(text: str, code: str, division: str) -> None:
    value = expect(text, ScanKind.PRODUCT_CODE)
    assert value.code == code
    assert (value.product_description_code, value.collection_type) == (code[:5], code[5])
    assert value.division == division
    assert value.is_cellular_therapy


@pytest.mark.parametrize("text", ["=<S1234V", "=<S12X4V00", "=<S1234V000"])
def test_product_code_wrong_shape_refused(text: str) -> None:
    refused(parse_scan, text)


@pytest.mark.parametrize(
    ("text", "at"),
    [
        (EXPIRY, EXPIRY_AT),
        ("&>0240010000", datetime(2024, 1, 1, 0, 0)),
        ("&>0240600800", datetime(2024, 2, 29, 8, 0)),  # leap year
        ("&>0250600800", datetime(2025, 3, 1, 8, 0)),
        ("&>0243662359", datetime(2024, 12, 31, 23, 59)),
        ("&>1000011200", datetime(2100, 1, 1, 12, 0)),
    ],
)
def test_expiry(text: str, at: datetime) -> None:
    assert expect(text, ScanKind.EXPIRY).at == at


@pytest.mark.parametrize(
    "text",
    [
        "&>0253661200",  # day 366 in 2025, not a leap year
        "&>0243671200",  # day 367 does not exist even in leap year 2024
        "&>0250001200",
        "&>0251232400",
        "&>0251231260",
        "&>025123235",
        "&>02512323A9",
    ],
)
def test_expiry_invalid_refused(text: str) -> None:
    refused(parse_scan, text)


def test_compound_message_right_count() -> None:
    result = parse_scan("=+03001" + DIN_SCAN + PRODUCT + EXPIRY + "\r\n")
    assert result.kind is ScanKind.COMPOUND
    assert result.value.reference == "001"
    items = result.value.items
    assert [item.kind for item in items] == [ScanKind.DIN, ScanKind.PRODUCT_CODE, ScanKind.EXPIRY]
    assert items[0].value == Din("W000009123456", "00", "G")
    assert items[1].value.code == "S1234V00"
    assert items[2].value.at == EXPIRY_AT


def test_compound_message_with_coi() -> None:
    items = parse_scan(f"=+02005&/{COI_VALUE}{DIN_SCAN}").value.items
    assert [item.value for item in items] == [
        ChainOfIdentity(COI_VALUE, COI_K),
        Din("W000009123456", "00", "G"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "=+02001" + DIN_SCAN + PRODUCT + EXPIRY,
        "=+04001" + DIN_SCAN + PRODUCT + EXPIRY,
        "=+00001",
        "=+02001" + DIN_SCAN + "=<S12",
        "=+02001" + DIN_SCAN + "RH0000042A",
        "=+0100" + DIN_SCAN,
    ],
)
def test_compound_message_wrong_count_or_content_refused(text: str) -> None:
    refused(parse_scan, text)


def test_compound_count_mismatch_code() -> None:
    err = refused(parse_scan, "=+02001" + DIN_SCAN + PRODUCT + EXPIRY)
    assert err.code == "count_mismatch"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (DIN_SCAN, ScanKind.DIN),
        (PRODUCT, ScanKind.PRODUCT_CODE),
        (EXPIRY, ScanKind.EXPIRY),
        (f"&/{COI_VALUE}", ScanKind.COI),
        ("=+01001" + DIN_SCAN, ScanKind.COMPOUND),
        ("RH0000042" + ref_check("RH0000042"), ScanKind.LOCAL_ID),
    ],
)
def test_parse_scan_kinds_and_expect_refuses_every_other_field(text: str, kind: ScanKind) -> None:
    assert parse_scan(text).kind is kind
    assert expect(text, kind) == parse_scan(text).value
    for other in ScanKind:
        if other is not kind:
            err = refused(expect, text, other)
            assert err.code == "wrong_structure"
            assert "field" in str(err)


@pytest.mark.parametrize("text", ["HELLO WORLD", "0101643066", "=%1234", "&)123", "", "  \r\n"])
def test_unrecognised_barcode_refused(text: str) -> None:
    err = refused(parse_scan, text)
    assert "0101643066" not in str(err)  # a stray CPR scan is not echoed


def test_unrecognised_message() -> None:
    assert "Unrecognised barcode" in str(refused(parse_scan, "HELLO WORLD"))


# --- local identifiers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "sequence", "width"),
    [("RH", 42, 7), ("OUH", 1, 7), ("AAUH", 9_999_999, 7), ("HGH", 123, 5), ("AUH", 0, 7)],
)
def test_local_id_round_trip(prefix: str, sequence: int, width: int) -> None:
    data = prefix + str(sequence).zfill(width)
    expected = data + ref_check(data)
    assert format_local_id(prefix, sequence, width) == expected
    parsed = parse_local_id(expected)
    assert parsed == LocalId(prefix, sequence, ref_check(data), width)
    assert parsed.text == expected
    assert parse_scan(expected).value == parsed
    assert parse_local_id(expected.lower() + "\r\n", width=width) == parsed


def test_local_id_default_width_is_seven() -> None:
    assert format_local_id("RH", 42) == "RH0000042" + ref_check("RH0000042")


def test_local_id_with_star_check_character() -> None:
    sequence = next(n for n in range(1, 10_000) if ref_checksum(f"RH{n:07d}") == 36)
    text = format_local_id("RH", sequence)
    assert text == f"RH{sequence:07d}*"
    assert parse_local_id(text) == LocalId("RH", sequence, "*", 7)
    assert parse_local_id(f"RH-{sequence:07d}-*") == LocalId("RH", sequence, "*", 7)
    assert parse_scan(text + "\r\n").kind is ScanKind.LOCAL_ID
    assert refused(parse_local_id, text[:-1] + "0").code == "bad_check_character"


@pytest.mark.parametrize("typed", ["RH 0000042 {k}", "rh-0000042-{k}", " RH0000042{k}\r\n"])
def test_local_id_typed_separators(typed: str) -> None:
    k = ref_check("RH0000042")
    assert parse_local_id(typed.format(k=k)) == LocalId("RH", 42, k, 7)


def test_local_id_wrong_check_character_refused() -> None:
    k = ref_check("OUH0000007")
    for wrong in CHARSET.replace(k, ""):
        err = refused(parse_local_id, "OUH0000007" + wrong)
        assert err.code == "bad_check_character"
        assert f"should be {k}" in str(err)
    assert refused(parse_scan, "OUH0000007" + CHARSET.replace(k, "")[0]).code == (
        "bad_check_character"
    )


def test_local_id_width_enforced_when_given() -> None:
    text = "RH0000042" + ref_check("RH0000042")
    refused(parse_local_id, text, width=6)


@pytest.mark.parametrize(
    ("prefix", "sequence", "width"),
    [("R", 1, 7), ("RHXXX", 1, 7), ("R1", 1, 7), ("RH", 10_000_000, 7), ("RH", -1, 7)],
)
def test_format_local_id_refuses(prefix: str, sequence: int, width: int) -> None:
    refused(format_local_id, prefix, sequence, width)


@pytest.mark.parametrize("text", ["R0000042A", "RHXXX0000042A", "RH0000042", "RHA"])
def test_parse_local_id_wrong_shape_refused(text: str) -> None:
    refused(parse_local_id, text)


# --- CPR -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpr", "born"),
    [
        # DOMAIN.md says "born 1962-10-21", but its own century rule (7th digit 5-8 with YY > 57
        # -> 1800s, as in the official CPR rule) gives 1862; the rule wins, see the test below.
        ("211062-5629", "2110625629", date(1862, 10, 21)),
        ("2110525629", "2110525629", date(2052, 10, 21)),
        ("2110620629", "2110620629", date(1962, 10, 21)),
        ("0101643066", "0101643066", date(1964, 1, 1)),
    ],
)
def test_cpr_vectors(text: str, cpr: str, born: date) -> None:
    result = parse_cpr(text)
    assert (result.cpr, result.birth_date) == (cpr, born)
    assert result.mod11_ok == ref_mod11(cpr)
    assert bool(result.warnings) == (not ref_mod11(cpr))


def test_cpr_domain_vector_1962_conflicts_with_century_rule() -> None:
    # Same digits with 7th digit 0-3 are the 1962 birth the DOMAIN.md vector had in mind.
    assert parse_cpr("211062-5629").birth_date.year == 1862
    assert parse_cpr("211062-3629").birth_date == date(1962, 10, 21)


def test_cpr_mod11_pass_and_failure_is_only_a_warning() -> None:
    good = parse_cpr("211062-5629")
    assert good.mod11_ok
    assert good.warnings == ()
    bad = parse_cpr("0101643066")
    assert not bad.mod11_ok
    assert len(bad.warnings) == 1


@pytest.mark.parametrize(
    ("yy", "seventh", "year"),
    [
        (0, 0, 1900),
        (99, 3, 1999),
        (36, 4, 2036),
        (37, 4, 1937),
        (36, 9, 2036),
        (37, 9, 1937),
        (0, 4, 2000),
        (57, 5, 2057),
        (58, 5, 1858),
        (57, 8, 2057),
        (58, 8, 1858),
        (0, 6, 2000),
        (99, 7, 1899),
    ],
)
def test_cpr_century_rule(yy: int, seventh: int, year: int) -> None:
    assert parse_cpr(f"0101{yy:02d}-{seventh}000").birth_date == date(year, 1, 1)


@pytest.mark.parametrize(
    "text", ["310299-1234", "290200-0000", "320162-1234", "011362-1234", "000162-1234"]
)
def test_cpr_impossible_date_refused(text: str) -> None:
    assert refused(parse_cpr, text).code == "bad_date"


def test_cpr_29_february_2000_exists() -> None:
    assert parse_cpr("290200-4000").birth_date == date(2000, 2, 29)


@pytest.mark.parametrize("text", ["21106-25629", "211062-562", "21106256290", "ABCDEF-GHIJ", ""])
def test_cpr_bad_format_refused(text: str) -> None:
    refused(parse_cpr, text)


def test_cpr_normalise_and_format() -> None:
    assert normalise_cpr(" 211062 5629\r\n") == "2110625629"
    assert normalise_cpr("211062-5629") == "2110625629"
    assert format_cpr("2110625629") == "211062-5629"
    refused(format_cpr, "310299-1234")


# --- eye-readable display --------------------------------------------------------------------


@pytest.mark.parametrize(("din", "c", "k"), DIN_VECTORS)
def test_eye_readable_din_as_printed_under_its_barcode(din: str, c: int, k: str) -> None:
    assert eye_readable(din, k) == f"{din[:5]} {din[5:7]} {din[7:]}"
    assert eye_readable(din) == f"{din[:5]} {din[5:7]} {din[7:]}"


def test_eye_readable_of_the_domain_din() -> None:
    assert eye_readable("W000009123456", "G") == "W0000 09 123456"


def test_eye_readable_din_ending_in_its_own_check_character_keeps_it() -> None:
    din = next(d for n in range(1000) if (d := f"W000009123{n:03d}")[-1] == ref_check(d))
    assert eye_readable(din, din[-1]) == f"W0000 09 {din[7:]}"


def test_eye_readable_coi_as_printed() -> None:
    assert eye_readable(COI_VALUE, COI_K) == "CH W0000 09 A1B2C3"
    assert eye_readable(COI_VALUE) == "CH W0000 09 A1B2C3"
    assert eye_readable(COI_VALUE, "3") == "CH W0000 09 A1B2C3"  # its last character stays


def test_eye_readable_local_id_drops_its_trailing_check_character() -> None:
    code = format_local_id("RH", 42)
    assert eye_readable(code, code[-1]) == "RH0000042"
    assert eye_readable(code) == code  # without K given, nothing is dropped
    sequence = next(n for n in range(1, 10_000) if ref_checksum(f"RH{n:07d}") == 36)
    assert eye_readable(f"RH{sequence:07d}*", "*") == f"RH{sequence:07d}"


@pytest.mark.parametrize(
    ("code", "check"),
    [("SH2025-0001", "X"), ("NOSUCHCODE", "Q"), ("RH0000042", "7"), ("", ""), ("=<S1234V00", "")],
)
def test_eye_readable_leaves_anything_else_unchanged(code: str, check: str) -> None:
    assert eye_readable(code, check) == code
