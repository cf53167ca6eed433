"""Idempotent producers and transactions (exactly once).

* :mod:`.producer_ids` -- unique producer ids, reserved in durable blocks;
* :mod:`.metadata` -- a transactional id's state machine and its ``__transaction_state`` record;
* :mod:`.state_log` -- the ``__transaction_state`` topic: partitioning, writing, loading;
* :mod:`.coordinator` -- the transaction coordinator (InitProducerId ... EndTxn, timeouts,
  fencing, expiry, recovery);
* :mod:`.markers` -- COMMIT/ABORT control batches written to the transaction's partitions;
* :mod:`.group_hooks` -- what transactional offset commits need from the group coordinator;
* the API handlers are in :mod:`pystream.broker.apis.transactions`.

The per-partition side (sequence/epoch checks, dedup, open transactions, the last
stable offset, producer snapshots, ``.txnindex``) lives in
:mod:`pystream.storage.producer_state` and :mod:`pystream.storage.txn_index`.
"""
