"""A sink for the distributed tests (``connect_dist_plugins.SplitFileSink``): up to
``tasks.max`` tasks, task ``i`` appending ``<partition> <offset> <value>`` lines to
``<file>.<i>``, so tasks on different workers never share a file."""

from __future__ import annotations

from pystream.connect.api import SinkConnector, SinkRecord, SinkTask, Task


class SplitFileSink(SinkConnector):
    def start(self, props: dict[str, str]) -> None:
        self.props = props

    def task_class(self) -> type[Task]:
        return SplitFileSinkTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [{**self.props, "file": f"{self.props['file']}.{i}"} for i in range(max_tasks)]

    def stop(self) -> None:
        return None


class SplitFileSinkTask(SinkTask):
    def start(self, props: dict[str, str]) -> None:
        self.stream = open(props["file"], "a")  # noqa: SIM115 - open until stop

    def put(self, records: list[SinkRecord]) -> None:
        for r in records:
            self.stream.write(f"{r.kafka_partition} {r.kafka_offset} {r.value}\n")
        self.stream.flush()

    def stop(self) -> None:
        self.stream.close()
