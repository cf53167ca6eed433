"""pystream.aio: the same clients with async methods, on the caller's event loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from broker_process import BrokerProcess

from pystream import aio
from pystream.client.connection import BrokerConnection
from pystream.client.errors import ClientClosedError
from pystream.client.types import TopicPartition

TP = TopicPartition


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("aio"),
        {
            "num.partitions": "2",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "3",
        },
    ).start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def topic() -> str:
    return "aio-" + uuid.uuid4().hex[:10]


def test_produce_and_consume_with_async_with(cluster: BrokerProcess, topic: str) -> None:
    async def main() -> None:
        async with aio.Producer(bootstrap_servers=cluster.bootstrap) as producer:
            first = await producer.send_and_wait(topic, b"one", key=b"k")
            future = await producer.send(topic, b"two", key=b"k")
            second = await future
            assert (second.partition, second.offset) == (first.partition, first.offset + 1)
            batch = await producer.send_batch(topic, np.full((50, 8), 7, dtype=np.uint8))
            assert sum(b.record_count for b in await batch) == 50
            assert await producer.partitions_for(topic) == [0, 1]
        with pytest.raises(ClientClosedError):
            await producer.send(topic, b"late")

        async with aio.Consumer(
            topic, bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest"
        ) as consumer:
            seen = []
            async with asyncio.timeout(30):
                async for record in consumer:
                    seen.append(record.value)
                    if len(seen) == 52:
                        break
            assert seen.count(bytes([7] * 8)) == 50 and {b"one", b"two"} <= set(seen)
            tp = TP(topic, first.partition)
            assert await consumer.position(tp) >= 2
            assert (await consumer.end_offsets([tp]))[tp] >= 2

    asyncio.run(main())


def test_many_concurrent_sends_are_awaited(cluster: BrokerProcess, topic: str) -> None:
    async def main() -> None:
        async with aio.Producer(bootstrap_servers=cluster.bootstrap, linger_ms=1) as producer:
            futures = [await producer.send(topic, b"%d" % i, partition=0) for i in range(2_000)]
            metadata = await asyncio.gather(*futures)
        assert [m.offset for m in metadata] == list(range(2_000))

    asyncio.run(main())


def test_async_group_and_admin(cluster: BrokerProcess, topic: str) -> None:
    host, port = cluster.bootstrap.rsplit(":", 1)

    async def main() -> None:
        conn = await BrokerConnection.open(
            host,
            int(port),
            client_id="probe",
            request_timeout_ms=10_000,
            connect_timeout_ms=10_000,
            max_response_size=1 << 20,
        )
        conn.close()
        if not {11, 19} <= set(conn.api_versions):
            pytest.skip("the broker does not advertise JoinGroup/CreateTopics yet")
        async with aio.AdminClient(bootstrap_servers=cluster.bootstrap) as admin:
            await admin.create_topics([aio.NewTopic(topic, num_partitions=3)])
            assert topic in await admin.list_topics()
        async with aio.Producer(bootstrap_servers=cluster.bootstrap) as producer:
            await (await producer.send_batch(topic, [b"x"] * 30))
        assigned: list[TopicPartition] = []

        async def on_assign(partitions: list[TopicPartition]) -> None:
            assigned.extend(partitions)

        async with aio.Consumer(
            topic,
            bootstrap_servers=cluster.bootstrap,
            group_id="ag-" + topic,
            auto_offset_reset="earliest",
            on_assign=on_assign,
            enable_auto_commit=False,
        ) as consumer:
            await consumer.wait_for_assignment(30)
            assert sorted(assigned) == [TP(topic, p) for p in range(3)]
            got = 0
            async with asyncio.timeout(30):
                while got < 30:
                    got += len(await consumer.poll(1))
            await consumer.commit()
            committed = await consumer.committed(assigned)
            assert sum(om.offset for om in committed.values()) == 30

    asyncio.run(main())
