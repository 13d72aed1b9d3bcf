"""Size bounds on what goes in and what comes out, so one record can never stop the stream.

A Kafka broker refuses a record larger than its ``message.max.bytes`` (1 MiB by default,
``max.message.bytes`` per topic). Without bounds, one input record whose reject or rated
CDR is larger than that is refused on every replay, and the worker stops on it forever.
Three bounds, each stated in the reject it leads to (SPEC 8, ``docs/decisions.md``):

1. An input record larger than ``max_record_bytes`` (default 512 KiB) is rejected
   ``invalid_record`` "record too large" before it is decoded. Every output of an
   accepted record is then at most the input plus its fixed fields (a rated CDR copies
   the ``attributes``; re-encoding JSON never makes it longer than its input text).
2. A reject's ``raw`` holds at most ``RAW_LIMIT`` bytes of the input (16 KiB; as text
   that is at most 96 KiB, a control byte being escaped as ``\\u0001``). When cut, the
   reject says so: ``raw_truncated: true``, ``raw_size`` (the input's size in bytes)
   and ``raw_sha256`` (of the whole input), so the record can still be found and told
   apart from others.
3. An output larger than ``MAX_OUTPUT_BYTES`` is never produced: the rater writes the
   reject of its input instead (``invalid_record``, "output too large"). ``rater/worker/sending.py`` does the same
   when the broker itself refuses an output for its size.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

DEFAULT_MAX_RECORD_BYTES = 512 * 1024
RAW_LIMIT = 16 * 1024
# Below the broker's default message.max.bytes (1,048,588), with room for the batch header.
MAX_OUTPUT_BYTES = 1_000_000


def raw_fields(raw: bytes, limit: int = RAW_LIMIT) -> dict[str, Any]:
    """The ``raw`` part of a reject (SPEC 8): the original bytes as text when they are
    UTF-8, else base64 (``raw_encoding``), cut to ``limit`` bytes of the input."""
    cut = raw if len(raw) <= limit else raw[:limit]
    try:
        raw.decode("utf-8")  # the whole input: text or base64 by what it is, not where it is cut
        # A cut inside a character drops that character's first bytes.
        text, encoding = cut.decode("utf-8", "ignore"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(cut).decode("ascii"), "base64"
    out: dict[str, Any] = {"raw": text, "raw_encoding": encoding}
    if cut is not raw:
        out["raw_truncated"] = True
        out["raw_size"] = len(raw)
        out["raw_sha256"] = hashlib.sha256(raw).hexdigest()
    return out


def too_large_detail(size: int, limit: int) -> str:
    return f"record too large: {size} bytes, the limit is {limit} (--max-record-bytes)"


def output_too_large_detail(topic: str, size: int, limit: int | None) -> str:
    over = f"over the limit of {limit} bytes" if limit is not None else "refused by the broker for its size"
    return f"output too large: its {topic} record is {size} bytes, {over}; the record was applied, that output is replaced by this reject"
