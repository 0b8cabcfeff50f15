"""Identifiers on CAR-T material: ISBT 128 structures, local IDs and Danish CPR numbers.

One module decides what a scan or a typed identifier means (DOMAIN.md section 3), so every form
field and import refuses the same things with the same words. Standard library only.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

MOD37_2_CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_VALUES = {ch: i for i, ch in enumerate(MOD37_2_CHARSET[:36])}
_SEPARATORS = re.compile(r"[\s-]+")
_FIN = r"[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}"
_DIN_RE = re.compile(_FIN + r"[0-9]{2}[0-9]{6}")
_COI_RE = re.compile("CH" + _FIN + r"[0-9]{2}[0-9A-Z]{6}")
# ISBT 128 data content of 003 is 8 characters, alpha-oooo-t-ds; DOMAIN.md's "6 chars" does not
# add up with its own field list (5 + 1 + 2), so the standard 8 is used. The last character
# (second-level division) is lower case in ISBT 128 (a-z or 0) and is folded back to lower case.
_PRODUCT_RE = re.compile(r"[A-Z][0-9]{4}[0-9A-Z][0-9A-Z][0-9a-z]")
_LOCAL_RE = re.compile(r"([A-Z]{2,4})([0-9]+)([0-9A-Z*])")
_CPR_RE = re.compile(r"([0-9]{6})[- ]?([0-9]{4})")
_CPR_WEIGHTS = (4, 3, 2, 7, 6, 5, 4, 3, 2, 1)


class IdentifierError(ValueError):
    """A refused identifier; the message is written for the person at the bench."""

    def __init__(self, message: str, code: str = "bad_format") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ScanKind(StrEnum):
    DIN = "din"
    PRODUCT_CODE = "product_code"
    EXPIRY = "expiry"
    COI = "coi"
    COMPOUND = "compound"
    LOCAL_ID = "local_id"


# kind -> (data identifier, name with article, field name)
_KINDS = {
    ScanKind.DIN: ("=", "a DIN", "DIN"),
    ScanKind.PRODUCT_CODE: ("=<", "an ISBT 128 product code", "product code"),
    ScanKind.EXPIRY: ("&>", "an ISBT 128 expiry date", "expiry date"),
    ScanKind.COI: ("&/", "a Chain of Identity identifier", "Chain of Identity"),
    ScanKind.COMPOUND: ("=+", "an ISBT 128 compound message", "compound message"),
    ScanKind.LOCAL_ID: ("", "a local identifier", "local identifier"),
}
_LENGTHS = {ScanKind.DIN: 16, ScanKind.PRODUCT_CODE: 10, ScanKind.EXPIRY: 12, ScanKind.COI: 17}


def describe(kind: ScanKind) -> str:
    """The structure's name with its article, for messages ("an ISBT 128 product code")."""
    return _KINDS[kind][1]


def looks_like_din(text: str) -> bool:
    """Whether ``text`` has the form of a bare 13-character DIN (no check character)."""
    return bool(_DIN_RE.fullmatch(text))


# --- ISO/IEC 7064 Mod 37-2 -------------------------------------------------------------------


def mod37_2_checksum(data: str) -> int:
    """Mod 37-2 check value 0..36: catches every single-character typing error and swap."""
    if not data:
        raise IdentifierError("There is nothing to compute a check character for.", "empty")
    s = 0
    for ch in data:
        value = _VALUES.get(ch)
        if value is None:
            raise IdentifierError(
                f"'{ch}' cannot be part of an identifier: only digits and capital letters can.",
                "bad_character",
            )
        s = ((s + value) * 2) % 37
    return (38 - s) % 37


def mod37_2_check_character(data: str) -> str:
    """The printed (boxed) check character K for `data`; may be '*'."""
    return MOD37_2_CHARSET[mod37_2_checksum(data)]


# --- parsed values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Din:
    """A 13-character ISBT 128 DIN; flags only when it came from a scan."""

    din: str
    flags: str | None
    check: str

    @property
    def fin(self) -> str:
        return self.din[:5]

    @property
    def year(self) -> str:
        return self.din[5:7]

    @property
    def sequence(self) -> str:
        return self.din[7:]

    @property
    def eye_readable(self) -> str:
        """As printed under the barcode, K excluded (it is boxed); checksum flags never print."""
        parts = [self.fin, self.year, self.sequence]
        if self.flags is not None and not 60 <= int(self.flags) <= 96:
            parts.append(self.flags)
        return " ".join(parts)

    @property
    def flag_meaning(self) -> str:
        if self.flags is None or self.flags == "00":
            return "no flag"
        f = int(self.flags)
        if 1 <= f <= 4 or 15 <= f <= 19:
            # Decision: 15-19 continue the count after 01-04, i.e. containers 5-9.
            return f"container {f if f <= 4 else f - 10} of a set"
        fixed = {5: "reprinted label", 6: "pilot tube", 7: "test tube"}
        if f in fixed:
            return fixed[f]
        if 20 <= f <= 59:
            return f"local use (flag {self.flags})"
        if 60 <= f <= 96:
            return "checksum flag"
        return f"reserved flag value {self.flags}"


@dataclass(frozen=True)
class ChainOfIdentity:
    """ISBT 128 data structure 040: the one identifier that follows a patient's material."""

    value: str
    check: str

    @property
    def fin(self) -> str:
        return self.value[2:7]

    @property
    def year(self) -> str:
        return self.value[7:9]

    @property
    def sequence(self) -> str:
        return self.value[9:]

    @property
    def eye_readable(self) -> str:
        return f"CH {self.fin} {self.year} {self.sequence}"


@dataclass(frozen=True)
class ProductCode:
    """ISBT 128 data structure 003 data content (8 characters, without '=<')."""

    code: str

    @property
    def product_description_code(self) -> str:
        return self.code[:5]

    @property
    def collection_type(self) -> str:
        return self.code[5]

    @property
    def division(self) -> str:
        return self.code[6:]

    @property
    def is_cellular_therapy(self) -> bool:
        return self.code[0] == "S"


@dataclass(frozen=True)
class Expiry:
    """ISBT 128 data structure 005; naive datetime in the site's local time."""

    at: datetime


@dataclass(frozen=True)
class LocalId:
    """A site-issued identifier (no ICCBBA licence, or an aliquot): prefix + digits + K."""

    prefix: str
    sequence: int
    check: str
    width: int = 7

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.sequence:0{self.width}d}{self.check}"


@dataclass(frozen=True)
class CompoundMessage:
    """ISBT 128 data structure 023: reference number bbb and the structures, in scan order."""

    reference: str
    items: tuple[ScanResult, ...]


@dataclass(frozen=True)
class ScanResult:
    kind: ScanKind
    value: Din | ProductCode | Expiry | ChainOfIdentity | CompoundMessage | LocalId
    raw: str


@dataclass(frozen=True)
class CprResult:
    cpr: str
    birth_date: date
    mod11_ok: bool
    warnings: tuple[str, ...]


# --- helpers ---------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Drop what scanners and people add around a value (spaces, Enter) and fold case."""
    if not isinstance(text, str) or not text.strip():
        raise IdentifierError("Nothing was scanned or typed.", "empty")
    return text.strip().upper()


def _identify(raw: str) -> ScanKind | None:
    """Structure named by the data identifier; None when there is no data identifier."""
    for kind in (ScanKind.COMPOUND, ScanKind.PRODUCT_CODE, ScanKind.EXPIRY, ScanKind.COI):
        if raw.startswith(_KINDS[kind][0]):
            return kind
    if raw[0] == "=" and raw[1:2].isalnum():
        return ScanKind.DIN
    if raw[0] in "=&":
        raise IdentifierError(
            f"This is an ISBT 128 barcode ({raw[:2]}) that this system does not read here.",
            "unrecognised",
        )
    return None


def _wrong(found: ScanKind, wanted: ScanKind) -> IdentifierError:
    di = _KINDS[found][0]
    shown = f" ({di})" if di else ""
    return IdentifierError(
        f"This looks like {_KINDS[found][1]}{shown}, not {_KINDS[wanted][1]}.", "wrong_structure"
    )


def _require_scan_of(raw: str, wanted: ScanKind) -> None:
    found = _identify(raw)
    if found is None:
        raise IdentifierError(
            f"This has no ISBT 128 data identifier ({_KINDS[wanted][0]}), so it was not scanned "
            f"from {_KINDS[wanted][1]} barcode.",
            "bad_format",
        )
    if found is not wanted:
        raise _wrong(found, wanted)


def _typed(text: str, wanted: ScanKind, example: str) -> str:
    raw = _clean(text)
    if raw[0] in "=&":
        raise IdentifierError(
            f"This looks like barcode data. Type the {_KINDS[wanted][2]} as printed, with its "
            f"boxed check character (e.g. {example}), or scan it.",
            "bad_format",
        )
    return _SEPARATORS.sub("", raw)


def _verify_check(data: str, given: str) -> str:
    expected = mod37_2_check_character(data)
    if given != expected:
        raise IdentifierError(
            f"The check character should be {expected}, not {given}: look for a typing error.",
            "bad_check_character",
        )
    return expected


def _typed_length(compact: str, what: str, expected: int) -> None:
    if "O" in compact and what.startswith("A typed DIN"):
        raise IdentifierError(
            "The letter O is never used here; did you mean 0 (zero)?", "bad_format"
        )
    raise IdentifierError(f"{what} ({expected} in all); this has {len(compact)}.", "bad_format")


def _din13(din13: str) -> str:
    if _DIN_RE.fullmatch(din13):
        return din13
    if "O" in din13:
        msg = "The letter O is never used in a DIN; did you mean the digit 0 (zero)?"
    elif len(din13) != 13:
        msg = f"A DIN has 13 characters (facility code, year, number); this has {len(din13)}."
    else:
        msg = "This is not a DIN: it is a 5-character facility code, 2-digit year, 6-digit number."
    raise IdentifierError(msg, "bad_format")


def _coi15(value15: str) -> str:
    if _COI_RE.fullmatch(value15):
        return value15
    count = "" if len(value15) == 15 else f"; this has {len(value15)}"
    raise IdentifierError(
        "A Chain of Identity identifier is CH, a 5-character facility code (no letter O), a "
        f"2-digit year and 6 letters or digits (15 characters){count}.",
        "bad_format",
    )


# --- DIN and Chain of Identity ---------------------------------------------------------------


def din_check_character(din13: str) -> str:
    """K for a 13-character DIN (the DIN only: no '=', no flags)."""
    return mod37_2_check_character(_din13(_clean(din13)))


def _din_from_scan(raw: str) -> Din:
    if len(raw) != 16:
        raise IdentifierError(
            "A scanned DIN is '=' followed by 13 characters and 2 flag digits (16 in all); "
            f"this has {len(raw)}.",
            "bad_format",
        )
    din, flags = _din13(raw[1:14]), raw[14:]
    if not (flags.isascii() and flags.isdigit()):
        raise IdentifierError("The two flag characters after a DIN must be digits.", "bad_flags")
    c = mod37_2_checksum(din)
    if 60 <= int(flags) <= 96 and int(flags) != 60 + c:
        raise IdentifierError(
            "The checksum flag in this DIN barcode does not match the DIN: the barcode is "
            "damaged or misprinted. Do not use it; type the DIN with its check character.",
            "bad_check_character",
        )
    return Din(din, flags, MOD37_2_CHARSET[c])


def parse_din(text: str, *, scanned: bool) -> Din:
    """Scanned: '=' + DIN + 2 flags, K not needed. Typed: DIN + K, K required and verified."""
    if scanned:
        raw = _clean(text)
        _require_scan_of(raw, ScanKind.DIN)
        return _din_from_scan(raw)
    compact = _typed(text, ScanKind.DIN, "W0000 09 123456 G")
    if len(compact) == 13 and _DIN_RE.fullmatch(compact):
        raise IdentifierError(
            "The check character is missing: type the boxed character printed after the DIN.",
            "missing_check_character",
        )
    if len(compact) == 16 and _DIN_RE.fullmatch(compact[:13]) and compact[13:15].isdigit():
        raise IdentifierError(
            "Type only the DIN and its boxed check character, without the two flag digits.",
            "bad_format",
        )
    if len(compact) != 14:
        _typed_length(compact, "A typed DIN is 13 characters and its check character", 14)
    din = _din13(compact[:13])
    return Din(din, None, _verify_check(din, compact[13]))


def coi_check_character(value15: str) -> str:
    """K for a 15-character Chain of Identity identifier (CH included)."""
    return mod37_2_check_character(_coi15(_clean(value15)))


def _coi_from_scan(raw: str) -> ChainOfIdentity:
    value = _coi15(raw[2:])
    return ChainOfIdentity(value, mod37_2_check_character(value))


def parse_coi(text: str, *, scanned: bool) -> ChainOfIdentity:
    """Scanned: '&/' + 15 characters. Typed: 15 characters + K, K required and verified."""
    if scanned:
        raw = _clean(text)
        _require_scan_of(raw, ScanKind.COI)
        return _coi_from_scan(raw)
    compact = _typed(text, ScanKind.COI, "CH W0000 09 A1B2C3 K")
    if len(compact) == 15 and _COI_RE.fullmatch(compact):
        raise IdentifierError(
            "The check character is missing: type the boxed character printed after the "
            "Chain of Identity.",
            "missing_check_character",
        )
    if len(compact) != 16:
        _typed_length(
            compact, "A typed Chain of Identity is 15 characters and its check character", 16
        )
    value = _coi15(compact[:-1])
    return ChainOfIdentity(value, _verify_check(value, compact[-1]))


def format_coi(coi: ChainOfIdentity | str) -> str:
    """Eye-readable Chain of Identity with its check character, e.g. 'CH W0000 09 A1B2C3 K'."""
    if isinstance(coi, str):
        value = _coi15(_clean(coi))
        coi = ChainOfIdentity(value, mod37_2_check_character(value))
    return f"{coi.eye_readable} {coi.check}"


# --- other ISBT 128 structures and the scan parser ---------------------------------------------


def _product_from_scan(raw: str) -> ProductCode:
    body = raw[2:9] + raw[9:].lower()
    if not _PRODUCT_RE.fullmatch(body):
        raise IdentifierError(
            "An ISBT 128 product code is '=<' followed by 8 characters: product description "
            "code (letter + 4 digits), collection type and 2-character division.",
            "bad_format",
        )
    return ProductCode(body)


def _expiry_from_scan(raw: str) -> Expiry:
    body = raw[2:]
    if len(body) != 10 or not (body.isascii() and body.isdigit()):
        raise IdentifierError("An ISBT 128 expiry is '&>' followed by 10 digits.", "bad_format")
    # c is the century: 0 = 20xx, 1 = 21xx, ...
    year = 2000 + 100 * int(body[0]) + int(body[1:3])
    day, hour, minute = int(body[3:6]), int(body[6:8]), int(body[8:10])
    if not 1 <= day <= (366 if calendar.isleap(year) else 365):
        raise IdentifierError(f"Day {day} of the year does not exist in {year}.", "bad_date")
    if hour > 23 or minute > 59:
        raise IdentifierError(f"The expiry time {body[6:8]}:{body[8:]} does not exist.", "bad_date")
    return Expiry(datetime(year, 1, 1, hour, minute) + timedelta(days=day - 1))


def _compound_from_scan(raw: str) -> CompoundMessage:
    if not re.fullmatch(r"=\+[0-9]{5}", raw[:7]):
        raise IdentifierError("A compound message starts '=+' and 5 digits.", "bad_format")
    count, items, pos = int(raw[2:4]), [], 7
    while pos < len(raw):
        kind = _identify(raw[pos:])
        if kind is None or kind is ScanKind.COMPOUND:
            raise IdentifierError(
                f"Part {len(items) + 1} of the compound message is not a structure this "
                "system reads.",
                "bad_format",
            )
        chunk = raw[pos : pos + _LENGTHS[kind]]
        items.append(ScanResult(kind, _SINGLE[kind](chunk), chunk))
        pos += _LENGTHS[kind]
    if not items or len(items) != count:
        raise IdentifierError(
            f"The compound message says {count} data structures follow, but it holds "
            f"{len(items)}: the barcode is incomplete or damaged.",
            "count_mismatch",
        )
    return CompoundMessage(raw[4:7], tuple(items))


_SINGLE = {
    ScanKind.DIN: _din_from_scan,
    ScanKind.PRODUCT_CODE: _product_from_scan,
    ScanKind.EXPIRY: _expiry_from_scan,
    ScanKind.COI: _coi_from_scan,
    ScanKind.COMPOUND: _compound_from_scan,
}


def parse_scan(text: str, *, local_width: int | None = None) -> ScanResult:
    """What a scanned barcode is, decided by its data identifier before length and format."""
    raw = _clean(text)
    kind = _identify(raw)
    if kind is not None:
        return ScanResult(kind, _SINGLE[kind](raw), raw)
    if _LOCAL_RE.fullmatch(raw):
        return ScanResult(ScanKind.LOCAL_ID, parse_local_id(raw, width=local_width), raw)
    # The content is not echoed: a wrong barcode may carry personal data (e.g. a CPR number).
    raise IdentifierError(
        f"Unrecognised barcode ({len(raw)} characters): not a DIN, product code, expiry, "
        "Chain of Identity or local identifier.",
        "unrecognised",
    )


def expect(
    text: str, kind: ScanKind | str, *, local_width: int | None = None
) -> Din | ProductCode | Expiry | ChainOfIdentity | CompoundMessage | LocalId:
    """Parse a scan for a field that takes one kind, refusing any other structure by name."""
    wanted = ScanKind(kind)
    result = parse_scan(text, local_width=local_width)
    if result.kind is not wanted:
        raise IdentifierError(
            f"You scanned {_KINDS[result.kind][1]} into the {_KINDS[wanted][2]} field.",
            "wrong_structure",
        )
    return result.value


# --- local identifiers -----------------------------------------------------------------------


def format_local_id(prefix: str, sequence: int, width: int = 7) -> str:
    """Prefix + zero-padded number + K, with no separators so it scans as one token."""
    prefix = prefix.strip().upper()
    if not re.fullmatch(r"[A-Z]{2,4}", prefix):
        raise IdentifierError("A site prefix is 2 to 4 capital letters, e.g. RH.", "bad_format")
    if width < 1 or isinstance(sequence, bool) or not 0 <= sequence < 10**width:
        raise IdentifierError(f"Number {sequence} does not fit in {width} digits.", "bad_format")
    data = f"{prefix}{sequence:0{width}d}"
    return data + mod37_2_check_character(data)


def parse_local_id(text: str, *, width: int | None = None) -> LocalId:
    """Verify K of a local identifier; spaces and hyphens typed by hand are ignored."""
    compact = _SEPARATORS.sub("", _clean(text))
    match = _LOCAL_RE.fullmatch(compact)
    if not match:
        raise IdentifierError(
            "A local identifier is a 2-4 letter site code, a number and a check character "
            "(e.g. RH0000042 and its check character).",
            "bad_format",
        )
    prefix, digits, given = match.groups()
    if width is not None and len(digits) != width:
        raise IdentifierError(
            f"The number in a local identifier has {width} digits; this has {len(digits)}.",
            "bad_format",
        )
    check = _verify_check(prefix + digits, given)
    return LocalId(prefix, int(digits), check, len(digits))


# --- display ---------------------------------------------------------------------------------


def eye_readable(code: str, check: str = "") -> str:
    """A stored code as printed beside its boxed check character, which is left out.

    A DIN as under its barcode (``W0000 09 123456``), a Chain of Identity in its groups
    (``CH W0000 09 A1B2C3``), a local identifier without the check character it ends in;
    anything else (a shipment number, an unknown scan) as it is.
    """
    # DIN and Chain of Identity first: either may end in a character equal to its K.
    if _DIN_RE.fullmatch(code):
        return Din(code, None, check).eye_readable
    if _COI_RE.fullmatch(code):
        return ChainOfIdentity(code, check).eye_readable
    if check and code.endswith(check) and _LOCAL_RE.fullmatch(code):
        return code[: -len(check)]
    return code


# --- Danish CPR ------------------------------------------------------------------------------


def parse_cpr(text: str) -> CprResult:
    """Validate shape and birth date; a mod 11 failure is a warning (valid CPRs since 2007 fail)."""
    match = _CPR_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise IdentifierError(
            "A CPR number is 10 digits written DDMMYY-SSSS (the hyphen may be left out).",
            "bad_format",
        )
    cpr = match[1] + match[2]
    yy, seventh = int(cpr[4:6]), int(cpr[6])
    if seventh <= 3:
        century = 1900
    elif seventh in (4, 9):
        century = 2000 if yy <= 36 else 1900
    else:
        century = 2000 if yy <= 57 else 1800
    try:
        born = date(century + yy, int(cpr[2:4]), int(cpr[0:2]))
    except ValueError:
        raise IdentifierError(
            "The first six digits of a CPR number are the birth date (DDMMYY), and this date "
            "does not exist.",
            "bad_date",
        ) from None
    ok = sum(int(d) * w for d, w in zip(cpr, _CPR_WEIGHTS, strict=True)) % 11 == 0
    warnings = (
        () if ok else ("CPR number fails the modulus 11 check; check it against the health card.",)
    )
    return CprResult(cpr, born, ok, warnings)


def normalise_cpr(text: str) -> str:
    """Ten digits, no hyphen: the one form stored and hashed for look-up."""
    return parse_cpr(text).cpr


def format_cpr(cpr10: str) -> str:
    """Display form DDMMYY-SSSS."""
    cpr = normalise_cpr(cpr10)
    return f"{cpr[:6]}-{cpr[6:]}"
