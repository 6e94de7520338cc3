"""The edge's delete listener outlives a broker outage, and stops cleanly.

A real tansu broker is stopped under a subscribed listener and started again on
the same port (with an empty log, as tansu keeps it in memory). The listener
must keep running and apply deletes published after the broker is back
(aiokafka reconnects by itself; an error that reaches the listener makes it
resubscribe). The delete is republished until applied: purging is
idempotent, and how long a consumer group takes to re-form is not under test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import variant_key
from pinhole.domain.ladder import PRESETS, Format
from pinhole.events import event_message
from pinhole.queue.kafka import KafkaJobQueue
from pinhole.settings import Cache, Kafka
from server.entry import Entry
from server.facts import ManifestFacts
from server.purge import DeleteListener, EdgePurger, SignedKeys, edge_group
from server.signing import rendition_key
from server.tiers import VariantTiers, new_l1
from tests.support.services import start_tansu

# Bounds, not expectations.
SUBSCRIBE_SECONDS = 60.0
RECOVER_SECONDS = 120.0


async def test_listener_survives_a_broker_outage_and_purges_after_it(
    tmp_path: Path, unique_name: str
) -> None:
    settings = Kafka(
        jobs_topic=f"{unique_name}.jobs",
        events_topic=f"{unique_name}.events",
        dead_letter_topic=f"{unique_name}.dlq",
        consumer_group=unique_name,
        partitions=2,
    )
    broker = start_tansu()
    port = broker.port
    store = build_blob_store(f"file://{tmp_path / 'store'}")
    l1 = new_l1(Cache())
    tiers = VariantTiers(l1, None, store, Cache())
    signed = SignedKeys()
    listener_queue = KafkaJobQueue(broker.bootstrap, settings, session_timeout_ms=2_000)
    listener = DeleteListener(
        listener_queue,
        settings.events_topic,
        edge_group(settings.consumer_group),
        EdgePurger(tiers, ManifestFacts(store), signed).purge,
    )
    listener.RETRY_PAUSE_SECONDS = 0.2
    image_id = image_id_for_bytes(b"deleted while the broker was down")
    ladder = variant_key(PRESETS[0], image_id, Format.WEBP)
    signed_key = rendition_key(10, 10, "fit", image_id, Format.WEBP)
    entry = Entry.from_body(b"variant bytes", time.time())
    for key in (ladder, signed_key):
        l1.set_nowait(key, entry, 3600)
    signed.add(image_id, signed_key)

    task = asyncio.create_task(listener.run())
    publisher: KafkaJobQueue | None = None
    try:
        await asyncio.wait_for(listener.subscribed.wait(), SUBSCRIBE_SECONDS)
        broker.stop()
        listener.subscribed.clear()
        # Down long enough for the consumer to notice and fail its fetches.
        await asyncio.sleep(3)
        assert not task.done()
        assert l1.get_nowait(ladder) is not None

        broker = start_tansu(port)
        publisher = KafkaJobQueue(broker.bootstrap, settings)
        await publisher.start()
        deadline = time.monotonic() + RECOVER_SECONDS
        while l1.get_nowait(ladder) is not None or l1.get_nowait(signed_key) is not None:
            assert time.monotonic() < deadline, "the listener never applied the delete"
            assert not task.done()
            await publisher.publish(settings.events_topic, event_message("image.deleted", image_id))
            await asyncio.sleep(0.5)
        assert signed.pop(image_id) == []
    finally:
        task.cancel()
        # Stops promptly and quietly on cancel (the app's shutdown path).
        await asyncio.wait([task], timeout=30)
        assert task.done()
        assert task.cancelled(), task
        if publisher is not None:
            await publisher.close()
        await listener_queue.close()
        await store.close()
        broker.stop()
