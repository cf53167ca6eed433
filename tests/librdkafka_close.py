"""Closing a confluent-kafka (librdkafka) group consumer without librdkafka's close() hang.

librdkafka 2.x (seen with 2.16.0; librdkafka issue #4884, fix PR #4883, both open) can
hang for ever in ``Consumer.close()`` when a rebalance event is already waiting in the
application's queue at the call — typically the revoke that follows a heartbeat answered
REBALANCE_IN_PROGRESS because another member just left the group:

1. close() terminates the group sub-system: it sends LeaveGroup and the final
   OffsetCommit; once both are answered the sub-system is gone (``rkcg_terminated``);
2. only then does close() serve the stale revoke: confluent-kafka's rebalance callback
   calls ``rd_kafka_assign(NULL)``, which sends an ASSIGN op to the group sub-system and
   waits for its reply without a timeout; a terminated sub-system destroys ops unanswered
   (``rd_kafka_cgrp_op_serve``), so close() waits for ever.  Stack at the hang:
   ``Consumer_close -> rd_kafka_consumer_close -> rd_kafka_poll_cb ->
   Consumer_rebalance_cb -> rd_kafka_assign -> rd_kafka_op_req -> cnd_wait``.

The broker has answered everything by then (the group is Empty, nothing is queued on
the socket).  Unsubscribing first and polling until the assignment is gone serves every
revoke while the group sub-system is alive, so close() has no rebalance left to serve.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer


def unsubscribe_and_close(
    consumer: Consumer, *, left: Callable[[], bool] | None = None, timeout: float = 30.0
) -> None:
    """Unsubscribe (the consumer leaves the group), poll until it owns no partition and,
    given ``left``, until ``left()`` says the broker dropped it; then close it.

    Fails (AssertionError) if that takes longer than ``timeout`` seconds.
    """
    consumer.unsubscribe()
    deadline = time.monotonic() + timeout
    while consumer.assignment() or (left is not None and not left()):
        assert time.monotonic() < deadline, (
            f"the consumer did not leave its group within {timeout}s after unsubscribe() "
            f"(it still owns {consumer.assignment()})"
        )
        consumer.poll(0.05)  # serves the rebalance callbacks; records do not matter now
    consumer.close()
