"""How fast faust-streaming alone delivers events: an agent that takes batches and does
nothing, over an existing topic. The ceiling any faust worker's throughput sits under.

    python scripts/faust_ceiling.py BOOTSTRAP TOPIC PARTITIONS RECORDS
"""

import sys
import time

import faust

bootstrap, topic_name, partitions, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = faust.App(
    f"ceiling-{int(time.time())}",
    broker=f"kafka://{bootstrap}",
    store="memory://",
    topic_partitions=partitions,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
state = {"n": 0, "t0": None}


@app.agent(topic)
async def drain(stream):
    async for events in stream.take_events(5000, within=0.05):
        if state["t0"] is None:
            state["t0"] = time.monotonic()
        state["n"] += len(events)
        if state["n"] >= expected:
            dt = time.monotonic() - state["t0"]
            print(f"faust take_events, empty agent: {state['n']:,} events in {dt:.2f} s = {state['n'] / dt:,.0f}/s", flush=True)
            import os

            os._exit(0)


if __name__ == "__main__":
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
