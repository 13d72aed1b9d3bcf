"""The stored account (rater/core/codec.py): format 2 byte for byte, format 1 still read,
both engines writing the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rater.core.codec import decode_account, decode_judged, encode_account
from rater.core.ledger import Account, Lot

try:
    import rater_native
except ImportError:  # the Python engine alone: the cross-engine checks skip
    rater_native = None

native = pytest.mark.skipif(rater_native is None, reason="the native engine is not built")


def _small() -> Account:
    return Account(
        tenant_id="t",
        rate_plan="p",
        currency="USD",
        lots=[Lot("f1", 1_500_000, 10, 20, "manual")],
        seen_cdrs={"c1": 100, "c2": 90},
        cdr_watermark=100,
        command_watermark=0,
        pruned_at=0,
        id_segments=[[0, 5]],
        next_segment=1,
    )


# Worked out by hand from the layout in rater/core/codec.py, field by field.
SMALL_FORMAT_2 = b"".join(
    [
        b"\x02",  # the version
        b"\x00",  # in: no judged offsets
        b"\x01t",  # t: length 1, "t"
        b"\x01p",  # p
        b"\x03USD",  # c
        b"\x00" * 10,  # lbt 0, idm 0, ar none, rs false, pr none, pra 0, pam 0, rc 0, tor: 0 requests, sb none
        b"\x01",  # lots: one
        b"\x02f1",  # its id
        b"\xc0\x8d\xb7\x01",  # remaining 1,500,000: zigzag 3,000,000 = 64 + 13*128 + 55*128^2 + 1*128^3
        b"\x14",  # purchased_at 10: zigzag 20
        b"\x28",  # expires_at 20: zigzag 40
        b"\x06manual",  # source
        b"\x00",  # debt 0
        b"\x00",  # dom: no months
        b"\x02",  # sc: two ids
        b"\x02c1\xc8\x01",  # c1 at 100: 100 - 0, zigzag 200 = 72 + 1*128
        b"\x02c2\x13",  # c2 at 90: 90 - 100 = -10, zigzag 19
        b"\x00",  # sm: none
        b"\xc8\x01",  # cw 100
        b"\x00\x00",  # mw 0, pa 0
        b"\x01\x00\x0a",  # sg: one segment, n 0, latest 5
        b"\x02",  # ns 1
    ]
)


def test_a_small_account_in_format_2_is_the_bytes_worked_out_by_hand():
    assert encode_account(_small()) == SMALL_FORMAT_2
    assert decode_account(SMALL_FORMAT_2) == _small()


@native
def test_the_native_codec_writes_the_same_format_2_bytes_from_either_format():
    assert rater_native.recode_account(SMALL_FORMAT_2) == SMALL_FORMAT_2
    assert rater_native.recode_account(encode_account(_small(), format=1)) == SMALL_FORMAT_2


def test_format_2_is_under_half_the_bytes_of_format_1_for_an_account_with_recent_ids():
    """What format 2 is for: an account of the benchmark's shape (a lot, some commands and
    40 recent CDR ids a few seconds apart) in fewer than half the bytes."""
    a = _small()
    a.seen_cdrs = {f"r1-{40000 + i * 7}": 1_795_132_906_000_000 + i * 3_000_000 for i in range(40)}
    a.seen_commands = {"r1-acme-00001-configure": 1_795_132_800_000_000, "r1-acme-00001-funds": 1_795_132_800_000_000}
    one, two = encode_account(a, format=1), encode_account(a)
    assert len(two) < len(one) / 2, (len(one), len(two))
    assert decode_account(one) == decode_account(two) == a


def test_the_format_2_integers_hold_the_native_range_and_no_more():
    a = _small()
    a.debt = 2**127 - 1
    a.lots[0].remaining = -(2**127)
    assert decode_account(encode_account(a)) == a
    a.debt = 2**127
    with pytest.raises(ValueError, match="out of range: 170141183460469231731687303715884105728"):
        encode_account(a)


def test_a_map_value_past_64_bits_is_refused_when_written():
    a = _small()
    a.seen_cdrs["c3"] = 2**63
    with pytest.raises(ValueError, match="an account time or count out of range: 9223372036854775808"):
        encode_account(a)


# SMALL_FORMAT_2 with c2's time (its one-byte difference) replaced.
C2_AT = SMALL_FORMAT_2.index(b"\x02c2") + 3


def _with_c2_difference(varint: bytes) -> bytes:
    return SMALL_FORMAT_2[:C2_AT] + varint + SMALL_FORMAT_2[C2_AT + 1 :]


@pytest.mark.parametrize(
    ("varint", "message"),
    [
        # 18 bytes of 7 bits and a last one of 2: the largest 128-bit value, zigzag for
        # -(2**127), a time far past 64 bits.
        (b"\xff" * 18 + b"\x03", "account format 2: sc: out of range"),
        (b"\xff" * 18 + b"\x04", "account format 2: sc: a varint past 128 bits"),
        # 2**64 (zigzag 2**65): past 64 bits as a time.
        (b"\x80" * 9 + b"\x04", "account format 2: sc: out of range"),
    ],
)
def test_a_time_past_64_bits_or_a_varint_past_128_is_refused_by_both_decoders(varint, message):
    value = _with_c2_difference(varint)
    with pytest.raises(ValueError, match=message):
        decode_account(value)
    if rater_native is not None:
        with pytest.raises(ValueError, match=message):
            rater_native.recode_account(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (SMALL_FORMAT_2[:-1], "account format 2: ends inside ns"),
        (SMALL_FORMAT_2[:10], "account format 2: ends inside lbt"),
        (SMALL_FORMAT_2 + b"\x00", "account format 2: 1 bytes after the last field"),
        (b"\x03", "account format version 3 is not known"),
        (b"", "account format version none \\(an empty value\\) is not known"),
    ],
)
def test_a_value_that_is_no_account_is_refused_with_what_is_wrong(value, message):
    with pytest.raises(ValueError, match=message):
        decode_account(value)


@native
def test_the_native_decoder_refuses_a_cut_value_as_the_python_one_does():
    for n in range(1, len(SMALL_FORMAT_2)):
        with pytest.raises(ValueError, match="account format 2: ends inside "):
            decode_account(SMALL_FORMAT_2[:n])
        with pytest.raises(ValueError, match="account format 2: ends inside "):
            rater_native.recode_account(SMALL_FORMAT_2[:n])


ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
times = st.integers(-(2**62), 2**62)
money = st.integers(-(2**100), 2**100)
accounts = st.builds(
    Account,
    tenant_id=ids,
    rate_plan=ids,
    currency=st.sampled_from(["USD", "EUR"]),
    low_balance_threshold=money,
    included_domestic_minutes=st.integers(0, 10**6),
    auto_recharge=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "enabled": st.booleans(),
                "threshold": money,
                "amount": money,
                "payment_method": st.one_of(
                    st.none(),
                    st.fixed_dictionaries({"type": st.just("card"), "expires": st.just("2027-01")}),
                    st.fixed_dictionaries({"type": st.just("card"), "expires": st.just("2027-01"), "last4": st.just("4242")}),
                ),
            }
        ),
    ),
    recharge_suspended=st.booleans(),
    pending_request_id=st.one_of(st.none(), ids),
    pending_requested_at=times,
    pending_amount=money,
    recharge_count=st.integers(0, 10**6),
    timed_out_requests=st.dictionaries(ids, st.tuples(money, times).map(list), max_size=3),
    suspended_by=st.one_of(st.none(), ids),
    lots=st.lists(st.builds(Lot, ids, money, times, times, st.sampled_from(["manual", "auto_recharge"])), max_size=4),
    debt=money,
    domestic_seconds_used=st.dictionaries(st.sampled_from(["2026-11", "2026-12"]), st.integers(0, 10**6)),
    seen_cdrs=st.dictionaries(ids, times, max_size=40),
    seen_commands=st.dictionaries(ids, times, max_size=5),
    cdr_watermark=times,
    command_watermark=times,
    pruned_at=times,
    id_segments=st.lists(st.tuples(st.integers(0, 10**6), times).map(list), max_size=3),
    next_segment=st.integers(0, 10**6),
)
judged = st.dictionaries(st.sampled_from(["cdrs", "tenant-commands"]), st.integers(0, 2**62))


@settings(max_examples=300, deadline=None)
@given(accounts, judged)
def test_any_account_reads_back_the_same_from_either_format(a, j):
    for format in (1, 2):
        if format == 1 and max(abs(a.debt), abs(a.low_balance_threshold)) >= 2**63:
            continue  # format 1 (orjson) holds 64-bit integers only
        try:
            value = encode_account(a, j, format=format)
        except TypeError:
            continue  # orjson refuses an integer past 64 bits inside: format 1's limit
        assert decode_judged(value) == (a, j)
    if rater_native is not None:
        assert rater_native.recode_account(encode_account(a, j)) == encode_account(a)
