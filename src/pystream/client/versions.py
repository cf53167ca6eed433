"""Which version of each API the client speaks, and the choice against a broker's ApiVersions.

The generated codecs encode every version, but the client code fills fields
for a known range per API: the upper bounds stop before changes the client
does not implement (topic ids in Fetch v13+, batched FindCoordinator v4+ and
OffsetFetch v8+, KIP-848 member epochs in OffsetCommit v9+).
"""

from __future__ import annotations

from .errors import UnsupportedFeatureError

__all__ = ["CLIENT_VERSIONS", "FEATURE_OF", "choose_version"]

# api key -> (name, min, max) the client implements.
CLIENT_VERSIONS: dict[int, tuple[str, int, int]] = {
    0: ("Produce", 3, 10),
    1: ("Fetch", 4, 12),
    2: ("ListOffsets", 1, 9),
    3: ("Metadata", 1, 12),
    8: ("OffsetCommit", 2, 8),
    9: ("OffsetFetch", 1, 7),
    10: ("FindCoordinator", 0, 3),
    11: ("JoinGroup", 0, 7),
    12: ("Heartbeat", 0, 4),
    13: ("LeaveGroup", 0, 5),
    14: ("SyncGroup", 0, 5),
    15: ("DescribeGroups", 0, 5),
    16: ("ListGroups", 0, 4),
    17: ("SaslHandshake", 0, 1),
    18: ("ApiVersions", 0, 3),
    19: ("CreateTopics", 0, 7),
    20: ("DeleteTopics", 0, 6),
    21: ("DeleteRecords", 0, 2),
    # From v3: KIP-360 (producer id and epoch in the request, to bump the epoch).
    22: ("InitProducerId", 0, 4),
    24: ("AddPartitionsToTxn", 0, 3),
    25: ("AddOffsetsToTxn", 0, 3),
    26: ("EndTxn", 0, 3),
    28: ("TxnOffsetCommit", 0, 3),
    # From v1: pattern types (PREFIXED ACLs).
    29: ("DescribeAcls", 1, 3),
    30: ("CreateAcls", 1, 3),
    31: ("DeleteAcls", 1, 3),
    32: ("DescribeConfigs", 0, 4),
    33: ("AlterConfigs", 0, 2),
    36: ("SaslAuthenticate", 0, 2),
    37: ("CreatePartitions", 0, 3),
    42: ("DeleteGroups", 0, 2),
    43: ("ElectLeaders", 0, 2),
    44: ("IncrementalAlterConfigs", 0, 1),
    45: ("AlterPartitionReassignments", 0, 0),
    46: ("ListPartitionReassignments", 0, 0),
    47: ("OffsetDelete", 0, 0),
    50: ("DescribeUserScramCredentials", 0, 0),
    51: ("AlterUserScramCredentials", 0, 0),
}

# What a missing API takes away, for the error message.
FEATURE_OF: dict[int, str] = {
    0: "producing",
    1: "consuming",
    2: "offset lookups (auto.offset.reset, seek_to_end)",
    8: "committing offsets",
    9: "reading committed offsets",
    10: "consumer groups (finding the group coordinator)",
    11: "consumer groups",
    12: "consumer groups",
    13: "consumer groups",
    14: "consumer groups",
    15: "describing groups",
    16: "listing groups",
    19: "creating topics",
    20: "deleting topics",
    21: "deleting records",
    22: "idempotent and transactional producing (producer ids)",
    24: "transactions",
    25: "transactions (send_offsets_to_transaction)",
    26: "transactions",
    28: "transactions (send_offsets_to_transaction)",
    29: "describing ACLs",
    30: "creating ACLs",
    31: "deleting ACLs",
    32: "describing configs",
    33: "altering configs",
    37: "creating partitions",
    42: "deleting groups",
    43: "electing leaders",
    44: "altering configs incrementally",
    45: "reassigning partitions",
    46: "listing partition reassignments",
    47: "deleting committed offsets",
}


def choose_version(
    api_key: int, broker_versions: dict[int, tuple[int, int]], broker: str = "the broker"
) -> int:
    """The highest version both sides speak; :class:`UnsupportedFeatureError` if none."""
    name, lo, hi = CLIENT_VERSIONS[api_key]
    advertised = broker_versions.get(api_key)
    if advertised is not None:
        best = min(hi, advertised[1])
        if best >= max(lo, advertised[0]):
            return best
        offer = f"versions {advertised[0]}-{advertised[1]}"
    else:
        offer = "no version at all"
    feature = FEATURE_OF.get(api_key, name)
    raise UnsupportedFeatureError(
        f"{broker} does not support {name} (api key {api_key}), needed for {feature}: "
        f"pystream's client speaks versions {lo}-{hi} and the broker advertises {offer}. "
        f"Upgrade the broker or use a feature it supports."
    )
