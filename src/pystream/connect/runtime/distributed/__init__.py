"""Distributed mode (``pystream connect distributed``): workers sharing a ``group.id``
form a group through the broker's group coordinator (protocol type ``connect``),
keep connector configs, source offsets and statuses in compacted topics, and share
connectors and tasks; a worker that leaves or dies has its work moved to the others.

- :mod:`.kafka_log`: Kafka's ``KafkaBasedLog``, a compacted topic read to its end at
  start and then followed;
- :mod:`.stores`: the config, status and offset stores over it (Kafka's record keys
  and JSON values);
- :mod:`.protocol`: Kafka's ``ConnectProtocol`` v0 metadata and assignments, and the
  eager round-robin assignment;
- :mod:`.member`: the worker's group membership (JoinGroup/SyncGroup/Heartbeat);
- :mod:`.herder`: the distributed herder the REST API calls, and ``run_distributed``.
"""
