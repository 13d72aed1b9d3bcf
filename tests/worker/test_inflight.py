"""What the next batch reads while a batch is being written (rater/worker/inflight.py)."""

from rater.worker.inflight import InFlight


def rec(key, value):
    """A changelog record as the worker hands it over (topic, partition, key, value, headers)."""
    return ("app-accounts-changelog", 0, key, value, None)


def test_a_key_in_flight_answers_its_value_and_other_keys_go_to_the_store():
    f = InFlight()
    f.put([rec(b"acme", b"v1"), rec(b"acme\x00ids\x000", None)])
    assert f.get(b"acme") == (True, b"v1")
    assert f.get(b"acme\x00ids\x000") == (True, None)  # a deletion in flight: not in the store either
    assert f.get(b"globex") == (False, None)


def test_done_forgets_a_batch_but_keeps_what_a_later_batch_put_for_the_same_key():
    f = InFlight()
    first = [rec(b"acme", b"v1"), rec(b"globex", b"g1")]
    f.put(first)
    second = [rec(b"acme", b"v2")]
    f.put(second)
    f.done(first)  # the first batch's local write is done
    assert f.get(b"acme") == (True, b"v2")  # the second batch's value, still in flight
    assert f.get(b"globex") == (False, None)
    f.done(second)
    assert f.get(b"acme") == (False, None) and len(f) == 0


def test_an_equal_value_of_a_later_batch_is_not_mistaken_for_the_earlier_one():
    # Identity, not equality: an account written twice with the same bytes (a duplicate-only
    # batch, say) stays in flight until the later write is done.
    f = InFlight()
    a, b = bytes(bytearray(b"same")), bytes(bytearray(b"same"))
    assert a == b and a is not b
    f.put([rec(b"acme", a)])
    f.put([rec(b"acme", b)])
    f.done([rec(b"acme", a)])
    assert f.get(b"acme") == (True, b"same") and len(f) == 1
