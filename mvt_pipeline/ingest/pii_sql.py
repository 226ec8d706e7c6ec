"""PII by shape, as SQL: the patterns, the redaction of a text, the keyed hash of an id.

Kinds (`PII_KINDS`): `email`; `ipv6` in every RFC 5952 form (full, `::`-compressed anywhere,
embedded / IPv4-mapped `::ffff:198.51.100.9`); `ipv4`; `card` (13-19 digits starting 2-6, single
spaces or dashes allowed, confirmed by the Luhn check in SQL); `phone` (international `+...` or
10-digit national with separators). Each pattern needs a boundary before and after the value so
that version strings (`Chrome/120.0.0.0`, `3.2.1`), dates and timestamps are left alone.

Why the shapes of the SQL:
- a pattern consumes the boundary character after its value, so a second value right after it
  (`a@x.io,b@y.io`) is not seen by the same `regexp_replace` pass: every pattern runs twice;
- a card candidate is only a card when its Luhn sum says so, which a regex cannot: candidates are
  extracted (`regexp_extract_all`, the trailing boundary is not consumed), filtered by the Luhn
  expression, and replaced as literal strings; a candidate followed by a letter, `@` or a decimal
  part (`.5`) is not a card;
- `ANY_PII` (one combined pattern, card candidates without the Luhn check) is the cheap test: a
  text it does not match holds no PII, so the exact redaction runs only on the (rare) others.
Replacements read `[redacted:<kind>]`; an id that holds PII is replaced as a whole by
`'pii_' || left(sha256(key || chr(31) || id), 24)` (`hashed_id_sql`), so the unit still joins.
"""

from __future__ import annotations

from .warehouse_schema import PII_KINDS

# The key of the id hash is a session variable set by ingestion (never in SQL text, never logged).
PII_KEY_VARIABLE = "mvt_ingest_pii_key"
# Used when MVT_PII_KEY is unset (ingestion logs a warning): ids are then hashed with a public key,
# which hides them from a casual reader but not from someone who guesses candidates.
DEFAULT_PII_KEY = "mvt-pipeline-default-pii-key"

_BOUNDARY = r"(^|[^A-Za-z0-9_./:-]|\\[nrtbf])"  # a JSON escape such as \n also ends a word
_PII_END = r"($|[^A-Za-z0-9_.@-])"
_CARD_BOUNDARY = r"(^|[^A-Za-z0-9_.]|\\[nrtbf])"
_H = "[0-9A-Fa-f]{1,4}"
_IPV4 = r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}"
_IPV6 = "(?:" + "|".join([
    f"(?:{_H}:){{6}}{_IPV4}",  # full form with an IPv4 tail
    f"(?:{_H}(?::{_H}){{0,5}})?::(?:{_H}:){{0,5}}{_IPV4}",  # compressed with an IPv4 tail (::ffff:1.2.3.4)
    f"(?:{_H}:){{7}}{_H}",  # full form
    f"(?:{_H}(?::{_H}){{0,6}})?::(?:{_H}(?::{_H}){{0,6}})?",  # :: anywhere (::1, fe80::1, 2001:db8::)
]) + ")"
# The patterns replaced by regex, in the order they are applied (after cards).
PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "ipv6": _IPV6,
    "ipv4": _IPV4,
    # international (+ prefix) or 10-digit national with separators; bare digit runs and dates
    # such as 2026-11-02 are not phone numbers
    "phone": r"(?:\+\d[\d ()-]{6,}\d|\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4})",
}
# 13-20 digits (a 20th means the run is too long for a card), then what would disqualify it
_CARD_CANDIDATE = r"[2-6]\d(?:[ -]?\d){11,17}(?:[ -]?\d)?(?:[A-Za-z_@]|\.\d)?"
_CARD_EXTRACT = f"{_CARD_BOUNDARY}({_CARD_CANDIDATE})"
assert set(PII_PATTERNS) | {"card"} == set(PII_KINDS)
# the order of the redaction chain: cards first (a card's digits are no phone), then the patterns
CHAIN_KINDS = ("card", *PII_PATTERNS)

_NOT_CARD_PII = _BOUNDARY + "(" + "|".join(f"(?:{p})" for p in PII_PATTERNS.values()) + ")" + _PII_END
ANY_PII = (_BOUNDARY + "(" + "|".join(f"(?:{p})" for p in PII_PATTERNS.values()) + ")" + _PII_END
           + "|" + _CARD_BOUNDARY + r"[2-6]\d(?:[ -]?\d){11,18}")

# A necessary condition of ANY_PII (every kind needs one of these: `@`, `:`, a digit-dot-digit, `+`
# and a digit, a digit then a separator and four digits, 13 digits): a far simpler RE2 program,
# for the fast path's test of short texts (ids), which then runs ANY_PII only where it matches.
MAYBE_PII = r"[@:]|\d\.\d|\+\d|\d[ .-]\d{4}|[2-6]\d(?:[ -]?\d){11}"


def may_hold_pii_sql(text: str) -> str:
    """TRUE when `text` may hold PII (`MAYBE_PII`, then `ANY_PII`): FALSE proves it holds none. A
    CASE, not AND: a projection evaluates both sides of an AND on every row."""
    return (f"(case when regexp_matches({text}, '{MAYBE_PII}') then regexp_matches({text}, '{ANY_PII}') "
            f"else false end)")


def _pattern(kind: str) -> str:
    return f"{_BOUNDARY}({PII_PATTERNS[kind]}){_PII_END}"


def luhn_sql(digits: str) -> str:
    """TRUE when the digit string `digits` passes the Luhn check (every second digit from the right
    doubled, digits of the products summed, total divisible by 10)."""
    return (f"(list_sum(list_transform(list_reverse(string_split({digits}, '')), lambda pii_d, pii_i: "
            f"case when pii_i % 2 = 0 then [0, 2, 4, 6, 8, 1, 3, 5, 7, 9][pii_d::integer + 1] "
            f"else pii_d::integer end)) % 10 = 0)")


def card_numbers_sql(text: str) -> str:
    """The card numbers in `text` (a list of the matched substrings): candidates of 13-19 digits
    that pass the Luhn check and are not followed by a letter, `@` or a decimal part."""
    digits = "regexp_replace(pii_c, '[^0-9]', '', 'g')"
    return (f"list_filter(regexp_extract_all({text}, '{_CARD_EXTRACT}', 2), lambda pii_c: "
            f"not regexp_matches(pii_c, '[A-Za-z_@.]') and strlen({digits}) between 13 and 19 "
            f"and {luhn_sql(digits)})")


def _replace_cards(text: str, cards: str) -> str:
    return f"list_reduce(list_prepend({text}, {cards}), lambda pii_a, pii_c: replace(pii_a, pii_c, '[redacted:card]'))"


def _replace(text: str, kind: str) -> str:
    return f"regexp_replace({text}, '{_pattern(kind)}', '\\1[redacted:{kind}]\\3', 'g')"


def redact_sql(column: str) -> str:
    """`column` (a column name: the card step reads it twice) with every PII value replaced by
    `[redacted:<kind>]`. One expression, for single texts (quarantined lines); counts need
    `redaction_steps_sql`."""
    text = _replace_cards(column, card_numbers_sql(column))
    for kind in PII_PATTERNS:
        text = _replace(_replace(text, kind), kind)
    return text


def holds_pii_sql(text: str) -> str:
    """TRUE when `text` holds PII of any kind (a test: no pass can miss a value)."""
    return f"(regexp_matches({text}, '{_NOT_CARD_PII}') or len({card_numbers_sql(text)}) > 0)"


def redaction_steps_sql(relation: str, column: str) -> str:
    """SELECT of `relation`'s columns plus `redacted` (`column` redacted) and `n_<kind>` (values
    found, per kind), computed step by step in nested projections so each step reads the previous
    one by name (inlined, the expressions would grow with every kind). Values are counted after
    the kinds before them are replaced, so one value is never counted twice."""
    sql = f"select *, {card_numbers_sql(column)} as pii_cards from ({relation})"
    sql = (f"select * exclude (pii_cards), {_replace_cards(column, 'pii_cards')} as pii_t0, "
           f"len(pii_cards) as n_card from ({sql})")
    step = 0
    for kind in PII_PATTERNS:
        for p in (1, 2):
            prev, step = f"pii_t{step}", step + 1
            sql = (f"select * exclude ({prev}), {_replace(prev, kind)} as pii_t{step}, "
                   f"len(regexp_extract_all({prev}, '{_pattern(kind)}')) as pii_n_{kind}_{p} from ({sql})")
    counts = ", ".join(f"pii_n_{k}_1 + pii_n_{k}_2 as n_{k}" for k in PII_PATTERNS)
    internal = ", ".join([f"pii_t{step}"] + [f"pii_n_{k}_{p}" for k in PII_PATTERNS for p in (1, 2)])
    return f"select * exclude ({internal}), pii_t{step} as redacted, {counts} from ({sql})"


def hashed_id_sql(value: str) -> str:
    """The keyed hash that replaces an id holding PII: deterministic (the unit still joins across
    events and days), not reversible without the key, recognisable by its `pii_` prefix."""
    key = f"coalesce(getvariable('{PII_KEY_VARIABLE}'), error('the PII key variable is not set'))"
    return f"('pii_' || left(sha256({key} || chr(31) || {value}), 24))"
