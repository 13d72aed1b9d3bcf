"""Input records (SPEC 3 and 5): decoding and validation into typed records.

``decode(raw, key)`` turns the bytes of one input record into a ``Cdr`` or a
``Command``, or raises ``Invalid`` with the reject reason (``invalid_json`` or
``invalid_record``) and a detail that names the field. Nothing here knows accounts or
rate tables: those checks (``unknown_tenant``, ``no_rate`` ...) are the ledger's.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from typing import Any, TypeGuard, cast

import orjson

from rater.core.money import MoneyError, parse_money
from rater.core.rates import CALL_TYPES
from rater.core.timeutil import TimeError, parse_time

MAX_DURATION = 86_400
TENANT_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_CARD_EXPIRES_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_LAST4_RE = re.compile(r"[0-9]{4}")

CDR_FIELDS = frozenset(("cdr_id", "tenant_id", "call_type", "to", "from", "started_at", "duration_seconds"))
COMMON_COMMAND_FIELDS = ("command_id", "tenant_id", "command", "occurred_at")
COMMAND_FIELDS = {
    "configure_account": frozenset(
        COMMON_COMMAND_FIELDS
        + (
            "rate_plan",
            "currency",
            "low_balance_threshold",
            "included_domestic_minutes",
            "auto_recharge",
        )
    ),
    "add_funds": frozenset(COMMON_COMMAND_FIELDS + ("amount", "purchased_at", "reference", "currency")),
    "payment_result": frozenset(COMMON_COMMAND_FIELDS + ("request_id", "status", "reason")),
}
_CALL_TYPE_SET = frozenset(CALL_TYPES)


class Invalid(ValueError):
    """A record that cannot be applied, with its SPEC 8 reject reason."""

    def __init__(self, reason: str, detail: str, tenant_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.tenant_id = tenant_id


class Cdr:
    __slots__ = (
        "cdr_id",
        "tenant_id",
        "call_type",
        "to",
        "from_",
        "started_at",
        "started_at_text",
        "duration",
        "attributes",
    )
    kind = "cdr"

    def __init__(self, cdr_id, tenant_id, call_type, to, from_, started_at, started_at_text, duration, attributes) -> None:
        self.cdr_id: str = cdr_id
        self.tenant_id: str = tenant_id
        self.call_type: str = call_type
        self.to: str = to
        self.from_: str | None = from_
        self.started_at: int = started_at
        self.started_at_text: str = started_at_text
        self.duration: int = duration
        self.attributes: dict[str, Any] = attributes

    @property
    def record_id(self) -> str:
        return self.cdr_id

    @property
    def event_time(self) -> int:
        return self.started_at


class Command:
    __slots__ = ("command_id", "tenant_id", "command", "occurred_at", "fields")
    kind = "command"

    def __init__(self, command_id: str, tenant_id: str, command: str, occurred_at: int, fields: dict[str, Any]):
        self.command_id = command_id
        self.tenant_id = tenant_id
        self.command = command
        self.occurred_at = occurred_at
        # Validated and converted: money as int micro-units, times as int microseconds.
        self.fields = fields

    @property
    def record_id(self) -> str:
        return self.command_id

    @property
    def event_time(self) -> int:
        return self.occurred_at


Record = Cdr | Command


def raw_text(raw: bytes) -> tuple[str, str]:
    """The original bytes for a reject: as text when UTF-8, else base64 (SPEC 8)."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def decode(raw: bytes | str | None, key: str | None = None) -> Record:
    """Parse and validate one input record. ``key`` is the Kafka key, when there is one;
    ``raw`` None is a Kafka record with a null value (a tombstone)."""
    if raw is None:
        raise Invalid("invalid_json", "null value (a Kafka tombstone): there is no record")
    if not raw:
        raise Invalid("invalid_json", "empty value: there is no record")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid("invalid_json", f"not valid JSON: {exc}"[:300]) from None
    if not isinstance(obj, dict):
        raise Invalid("invalid_record", f"the record must be a JSON object, not {_json_type(obj)}")
    repeated = _repeated_key(raw, obj)
    if repeated is not None:
        tenant = obj.get("tenant_id")
        raise Invalid(
            "invalid_record",
            f"{repeated[:80]}: the key appears more than once in an object (readers may take either value)",
            tenant if repeated != "tenant_id" and isinstance(tenant, str) and TENANT_RE.fullmatch(tenant) else None,
        )
    if "cdr_id" in obj:
        record: Record = validate_cdr(obj)
    elif "command" in obj:
        record = validate_command(obj)
    else:
        tenant = obj.get("tenant_id")
        raise Invalid(
            "invalid_record",
            "cdr_id/command: the record has neither (a CDR needs cdr_id, a command needs command)",
            tenant if isinstance(tenant, str) and TENANT_RE.fullmatch(tenant) else None,
        )
    if key is not None and key != record.tenant_id:
        raise Invalid(
            "invalid_record",
            f"tenant_id: {record.tenant_id!r} does not match the record key {key[:80]!r}",
            record.tenant_id,
        )
    return record


_SPACE_BEFORE_COLON = re.compile(rb'"[ \t\r\n]+:')


def _repeated_key(raw: bytes | str, obj: dict) -> str | None:
    """The first key that appears twice in one object of ``raw`` (at any depth), or None.

    orjson, like most parsers, keeps the last of repeated keys; another reader may keep
    the first, so such a record is ambiguous and refused (docs/decisions.md).

    Fast path, exact: with no backslash in the text no string holds a ``"``, so every
    ``":`` ends a key; with no space between a key and its colon, their count is the
    number of keys written. It equals the number of keys parsed exactly when none
    repeats. Otherwise the text is parsed a second time, pair by pair."""
    data = raw.encode() if isinstance(raw, str) else raw
    if b"\\" not in data and not _SPACE_BEFORE_COLON.search(data) and data.count(b'":') == _count_keys(obj):
        return None
    found: list[str] = []

    def pairs(items: list) -> dict:
        seen = set()
        for k, _v in items:
            if k in seen and not found:
                found.append(k)
            seen.add(k)
        return dict(items)

    # orjson accepted the text, so it is at most 1,024 levels deep (JSON_DEPTH); the
    # scanner of the json module counts each level against the recursion limit, which
    # is 1,000 by default: lifted for this call, or such a record would raise
    # RecursionError where it must be rejected.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + JSON_DEPTH + 100)
    try:
        json.loads(data, object_pairs_hook=pairs)
    finally:
        sys.setrecursionlimit(limit)
    return found[0] if found else None


JSON_DEPTH = 1024  # orjson's limit of nested arrays and objects: deeper text is invalid_json


def _count_keys(obj: dict) -> int:
    """The keys of ``obj`` and of every object within it, at any depth (no recursion:
    the text may be nested as deep as orjson allows)."""
    n = 0
    stack: list[Any] = [obj]
    while stack:
        v = stack.pop()
        if v.__class__ is dict:
            n += len(v)
            stack.extend(x for x in v.values() if x.__class__ is dict or x.__class__ is list)
        else:
            stack.extend(x for x in v if x.__class__ is dict or x.__class__ is list)
    return n


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _id(obj: dict, name: str, tenant: str | None, limit: int = 128) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not 1 <= len(v) <= limit:
        if v is None:
            raise Invalid("invalid_record", f"{name}: required", tenant)
        raise Invalid("invalid_record", f"{name}: must be a string of 1 to {limit} characters", tenant)
    if _CONTROL_RE.search(v):
        raise Invalid("invalid_record", f"{name}: must not contain control characters (U+0000 to U+001F, U+007F to U+009F)", tenant)
    return v


_VALID_TENANTS: set[str] = set()  # ids that passed TENANT_RE: a set probe is cheaper than the regex


def _tenant(obj: dict) -> str:
    v = obj.get("tenant_id")
    if v.__class__ is str and v in _VALID_TENANTS:
        return v
    if v is None:
        raise Invalid("invalid_record", "tenant_id: required")
    if not isinstance(v, str) or not TENANT_RE.fullmatch(v):
        raise Invalid("invalid_record", "tenant_id: must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    if len(_VALID_TENANTS) >= 100_000:
        _VALID_TENANTS.clear()
    _VALID_TENANTS.add(v)
    return v


def _time(obj: dict, name: str, tenant: str) -> int:
    v = obj.get(name)
    if v is None:
        raise Invalid("invalid_record", f"{name}: required", tenant)
    try:
        return parse_time(v)
    except TimeError as exc:
        raise Invalid("invalid_record", f"{name}: {exc}", tenant) from None


def _money(obj: dict, name: str, tenant: str, minimum: int, required: bool) -> int | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise Invalid("invalid_record", f"{name}: required", tenant)
        return None
    try:
        micro = parse_money(v)
    except MoneyError as exc:
        raise Invalid("invalid_record", f"{name}: {exc}", tenant) from None
    if micro < minimum:
        rule = "> 0" if minimum > 0 else ">= 0"
        raise Invalid("invalid_record", f"{name}: must be {rule}", tenant)
    return micro


def _int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_cdr(obj: dict) -> Cdr:
    tenant = _tenant(obj)
    cdr_id = _id(obj, "cdr_id", tenant)
    call_type = obj.get("call_type")
    if not isinstance(call_type, str) or call_type not in _CALL_TYPE_SET:
        if call_type is None:
            raise Invalid("invalid_record", "call_type: required", tenant)
        raise Invalid("invalid_record", f"call_type: must be one of {', '.join(CALL_TYPES)}", tenant)
    to = obj.get("to")
    if not isinstance(to, str) or not E164_RE.fullmatch(to):
        if to is None:
            raise Invalid("invalid_record", "to: required", tenant)
        raise Invalid("invalid_record", "to: must be an E.164 number (+ then 2 to 15 digits, the first not 0)", tenant)
    from_ = obj.get("from")
    if from_ is not None and (not isinstance(from_, str) or not E164_RE.fullmatch(from_)):
        raise Invalid("invalid_record", "from: must be an E.164 number (+ then 2 to 15 digits, the first not 0)", tenant)
    started_text = obj.get("started_at")
    started_at = _time(obj, "started_at", tenant)
    duration = obj.get("duration_seconds")
    if not _int(duration) or not 0 <= duration <= MAX_DURATION:
        if duration is None:
            raise Invalid("invalid_record", "duration_seconds: required", tenant)
        raise Invalid("invalid_record", f"duration_seconds: must be an integer from 0 to {MAX_DURATION}", tenant)
    extra = obj.keys() - CDR_FIELDS
    attributes = {k: v for k, v in obj.items() if k in extra} if extra else {}
    return Cdr(cdr_id, tenant, call_type, to, from_, started_at, started_text, duration, attributes)


def validate_command(obj: dict) -> Command:
    tenant = _tenant(obj)
    command_id = _id(obj, "command_id", tenant)
    command = obj.get("command")
    allowed = COMMAND_FIELDS.get(command) if isinstance(command, str) else None
    if allowed is None:
        raise Invalid("invalid_record", f"command: must be one of {', '.join(COMMAND_FIELDS)}", tenant)
    occurred_at = _time(obj, "occurred_at", tenant)
    for k in obj:
        if k not in allowed:
            raise Invalid("invalid_record", f"{str(k)[:64]}: not a field of {command}", tenant)
    fields: dict[str, Any] = {}
    if command == "configure_account":
        _configure_fields(obj, tenant, fields)
    elif command == "add_funds":
        fields["amount"] = _money(obj, "amount", tenant, 1, True)
        if obj.get("purchased_at") is not None:
            fields["purchased_at"] = _time(obj, "purchased_at", tenant)
        ref = obj.get("reference")
        if ref is not None:
            if not isinstance(ref, str) or len(ref) > 256:
                raise Invalid("invalid_record", "reference: must be a string of at most 256 characters", tenant)
            fields["reference"] = ref
        _currency(obj, tenant, fields)
    else:  # payment_result
        fields["request_id"] = _id(obj, "request_id", tenant, 200)
        status = obj.get("status")
        if status not in ("succeeded", "failed"):
            raise Invalid("invalid_record", "status: must be succeeded or failed", tenant)
        fields["status"] = status
        reason = obj.get("reason")
        if reason is not None:
            if not isinstance(reason, str) or not 1 <= len(reason) <= 256:
                raise Invalid("invalid_record", "reason: must be a string of 1 to 256 characters", tenant)
            fields["reason"] = reason
    return Command(command_id, tenant, cast(str, command), occurred_at, fields)


def _currency(obj: dict, tenant: str, fields: dict) -> None:
    cur = obj.get("currency")
    if cur is not None:
        if not isinstance(cur, str) or not _CURRENCY_RE.fullmatch(cur):
            raise Invalid("invalid_record", "currency: must be an ISO 4217 code such as USD", tenant)
        fields["currency"] = cur


def _configure_fields(obj: dict, tenant: str, fields: dict) -> None:
    plan = obj.get("rate_plan")
    if plan is not None:
        if not isinstance(plan, str) or not 1 <= len(plan) <= 64:
            raise Invalid("invalid_record", "rate_plan: must be a plan id (a string of 1 to 64 characters)", tenant)
        fields["rate_plan"] = plan
    _currency(obj, tenant, fields)
    threshold = _money(obj, "low_balance_threshold", tenant, 0, False)
    if threshold is not None:
        fields["low_balance_threshold"] = threshold
    minutes = obj.get("included_domestic_minutes")
    if minutes is not None:
        if not _int(minutes) or not 0 <= minutes <= 1_000_000:
            raise Invalid("invalid_record", "included_domestic_minutes: must be an integer from 0 to 1000000", tenant)
        fields["included_domestic_minutes"] = minutes
    if "auto_recharge" in obj:
        fields["auto_recharge"] = _auto_recharge(obj["auto_recharge"], tenant)


def _auto_recharge(ar: object, tenant: str) -> dict:
    if not isinstance(ar, dict):
        raise Invalid("invalid_record", "auto_recharge: must be an object", tenant)
    for k in ar:
        if k not in ("enabled", "threshold", "amount", "payment_method"):
            raise Invalid("invalid_record", f"auto_recharge.{str(k)[:64]}: not a field of auto_recharge", tenant)
    enabled = ar.get("enabled")
    if not isinstance(enabled, bool):
        raise Invalid("invalid_record", "auto_recharge.enabled: required, true or false", tenant)
    out: dict[str, Any] = {"enabled": enabled}
    try:
        threshold = _money(ar, "threshold", tenant, 0, enabled)
        amount = _money(ar, "amount", tenant, 1, enabled)
    except Invalid as exc:
        raise Invalid(exc.reason, "auto_recharge." + exc.detail, tenant) from None
    out["threshold"] = threshold if threshold is not None else 0
    out["amount"] = amount if amount is not None else 0
    pm = ar.get("payment_method")
    if pm is None:
        if enabled:
            raise Invalid("invalid_record", "auto_recharge.payment_method: required when enabled", tenant)
        out["payment_method"] = None
        return out
    if not isinstance(pm, dict):
        raise Invalid("invalid_record", "auto_recharge.payment_method: must be an object", tenant)
    for k in pm:
        if k not in ("type", "expires", "last4"):
            raise Invalid("invalid_record", f"auto_recharge.payment_method.{str(k)[:64]}: not a field of payment_method", tenant)
    if pm.get("type") != "card":
        raise Invalid("invalid_record", "auto_recharge.payment_method.type: must be card", tenant)
    expires = pm.get("expires")
    if not isinstance(expires, str) or not _CARD_EXPIRES_RE.fullmatch(expires):
        raise Invalid("invalid_record", "auto_recharge.payment_method.expires: must be YYYY-MM", tenant)
    method = {"type": "card", "expires": expires}
    last4 = pm.get("last4")
    if last4 is not None:
        if not isinstance(last4, str) or not _LAST4_RE.fullmatch(last4):
            raise Invalid("invalid_record", "auto_recharge.payment_method.last4: must be 4 digits", tenant)
        method["last4"] = last4
    out["payment_method"] = method
    return out
