"""Never a 202 without a durable pending record; never a lost accepted upload.

The ingest app runs in-process against a real S3-protocol server (moto) and a
real Kafka-protocol broker (tansu) that the test stops mid-way.
"""

from __future__ import annotations

import aiohttp
import pyvips

from pinhole.app.runtime import build_ingest_app
from pinhole.app.wiring import build_blob_store
from pinhole.domain.ids import image_id_for_bytes
from pinhole.domain.keys import original_key
from pinhole.domain.manifest import Status
from pinhole.manifests import load_manifest
from pinhole.settings import Auth, Kafka, Settings
from tests.support.apps import PinholeTestServer
from tests.support.services import MotoS3, start_tansu


def _jpeg(seed: int) -> bytes:
    data: bytes = (pyvips.Image.black(64, 48) + seed).cast("uchar").write_to_buffer(".jpg")
    return data


async def test_broker_down_answers_503_and_keeps_the_pending_record(
    moto_s3: MotoS3, unique_name: str
) -> None:
    broker = start_tansu()
    settings = Settings(
        storage=moto_s3.url(unique_name),
        queue=broker.url,
        cache="memory://",
        auth=Auth(allow_anonymous=True),
        kafka=Kafka(
            jobs_topic=f"{unique_name}.jobs",
            events_topic=f"{unique_name}.events",
            dead_letter_topic=f"{unique_name}.dlq",
            partitions=1,
        ),
    )
    store = build_blob_store(settings.storage)
    headers = {"Content-Type": "image/jpeg"}
    try:
        async with (
            PinholeTestServer(build_ingest_app(settings)) as server,
            aiohttp.ClientSession() as session,
        ):
            async with session.post(
                server.make_url("/v1/images"), data=_jpeg(1), headers=headers
            ) as r:
                assert r.status == 202, await r.text()

            broker.stop()
            data = _jpeg(2)
            async with session.post(server.make_url("/v1/images"), data=data, headers=headers) as r:
                body = await r.json()
                assert r.status == 503, body
                assert body["error"]["code"] == "service-unavailable"
                assert int(r.headers["Retry-After"]) > 0
                assert r.headers["Cache-Control"] == "no-store"

            # The upload was not lost: original and pending manifest are durable,
            # so reconcile can enqueue it once the broker is back.
            image_id = image_id_for_bytes(data)
            manifest = await load_manifest(store, image_id)
            assert manifest is not None
            assert manifest.status is Status.PENDING
            assert await store.head(original_key(image_id)) is not None

            async with session.get(server.make_url("/readyz")) as r:
                assert r.status == 503
                assert (await r.json())["checks"]["queue"].startswith("unavailable")
            async with session.get(server.make_url("/healthz")) as r:
                assert r.status == 200
    finally:
        broker.stop()
        await store.close()
