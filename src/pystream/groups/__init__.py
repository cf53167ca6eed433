"""Consumer groups: the group coordinator and committed offsets in ``__consumer_offsets``.

:mod:`.coordinator` is the coordinator (partition ownership, admin, expiry timer),
composed of :mod:`.membership` (the rebalance protocol), :mod:`.committed_offsets`
(the offsets store) and :mod:`.persistence` (writing and replaying
``__consumer_offsets``); :mod:`.group` is one group's state machine,
:mod:`.offsets_log` the record formats and the partition replay.
"""
