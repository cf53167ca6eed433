"""Replaying ``__consumer_offsets``: the newest record per key wins, tombstones delete,
transactional commits count only once committed, foreign records are skipped.

Batches are built with the same codec the coordinator writes with, appended to a
real partition log, and read back from it as the coordinator does at startup.
"""

from __future__ import annotations

from pathlib import Path

from pystream._core import records as core_records
from pystream.groups.group import ClassicGroup, GroupState
from pystream.groups.offsets_log import (
    LoadedPartition,
    OffsetAndMetadata,
    PartitionLoader,
    build_records,
    decode_offset_value,
    group_metadata_key,
    group_metadata_value,
    offset_commit_key,
    offset_commit_value,
)
from pystream.protocol.messages.internal import GroupMetadataValue, OffsetCommitValue
from pystream.storage.log import AppendOrigin, Log


def replay(tmp_path: Path, batches: list[bytes | bytearray]) -> LoadedPartition:
    log = Log.open(str(tmp_path / "__consumer_offsets-0"))
    try:
        for batch in batches:
            log.append(bytearray(batch), 0, origin=AppendOrigin.COORDINATOR)
        loader = PartitionLoader()
        data = log.read(0, 1 << 30)
        for batch in core_records.iter_batches(data.view()):
            loader.add_batch(batch)
        return loader.finish()
    finally:
        log.close()


def commit_record(group: str, partition: int, offset: int) -> tuple[bytes, bytes]:
    value = OffsetAndMetadata(offset, 7, f"m{offset}", 1_700_000_000_000 + offset)
    return offset_commit_key(group, "t", partition), offset_commit_value(value)


def test_newest_commit_wins_and_tombstones_delete(tmp_path: Path) -> None:
    loaded = replay(
        tmp_path,
        [
            build_records([commit_record("g", 0, 1), commit_record("g", 1, 10)], 1),
            build_records([commit_record("g", 0, 2)], 2),
            build_records([(offset_commit_key("g", "t", 1), None)], 3),  # OffsetDelete
            build_records([commit_record("h", 0, 5)], 4),
        ],
    )
    assert loaded.records == 5
    assert loaded.offsets == {
        "g": {("t", 0): OffsetAndMetadata(2, 7, "m2", 1_700_000_000_002)},
        "h": {("t", 0): OffsetAndMetadata(5, 7, "m5", 1_700_000_000_005)},
    }


def test_group_metadata_and_group_tombstones(tmp_path: Path) -> None:
    member = GroupMetadataValue.MemberMetadata(
        member_id="m-1",
        group_instance_id="i-1",
        client_id="c",
        client_host="/127.0.0.1",
        rebalance_timeout=30_000,
        session_timeout=10_000,
        subscription=b"sub",
        assignment=b"asg",
    )
    stable = GroupMetadataValue(
        protocol_type="consumer",
        generation=4,
        protocol="range",
        leader="m-1",
        current_state_timestamp=123,
        members=[member],
    )
    loaded = replay(
        tmp_path,
        [
            build_records([(group_metadata_key("kept"), group_metadata_value(stable))], 1),
            build_records([(group_metadata_key("gone"), group_metadata_value(stable))], 1),
            build_records([commit_record("gone", 0, 1)], 2),
            build_records(
                [(offset_commit_key("gone", "t", 0), None), (group_metadata_key("gone"), None)], 3
            ),
        ],
    )
    assert set(loaded.groups) == {"kept"}
    assert loaded.removed_groups == {"gone"}
    assert "gone" not in loaded.offsets
    group = ClassicGroup.from_metadata_value("kept", loaded.groups["kept"])
    assert group.state is GroupState.STABLE
    assert (group.generation_id, group.protocol_name, group.leader_id) == (4, "range", "m-1")
    assert group.static_member_id("i-1") == "m-1"
    assert group.members["m-1"].assignment == b"asg"
    assert group.members["m-1"].metadata("range") == b"sub"


def test_transactional_commits_count_only_when_committed(tmp_path: Path) -> None:
    def txn(pid: int, *records: tuple[bytes, bytes]) -> bytearray:
        return build_records(records, 1, producer_id=pid, producer_epoch=0, transactional=True)

    def marker(pid: int, commit: bool) -> bytes:
        return core_records.build_control_batch(commit, pid, 0, 1)

    loaded = replay(
        tmp_path,
        [
            build_records([commit_record("g", 0, 1), commit_record("g", 1, 1)], 1),
            txn(100, commit_record("g", 0, 50)),
            txn(200, commit_record("g", 1, 60)),
            txn(300, commit_record("g", 2, 70)),
            txn(400, commit_record("g", 3, 80)),
            marker(100, True),  # committed: visible
            marker(200, False),  # aborted: gone
            build_records([commit_record("g", 2, 5)], 2),  # a plain commit after txn 300's
            marker(300, True),  # ... so txn 300's older offset does not win
        ],
    )
    offsets = {tp: o.offset for tp, o in loaded.offsets["g"].items()}
    assert offsets == {("t", 0): 50, ("t", 1): 1, ("t", 2): 5}
    # Transaction 400 is still open at the end of the log.
    assert {
        pid: {g: {tp: o.offset for tp, o in by.items()} for g, by in groups.items()}
        for pid, groups in loaded.pending_transactions.items()
    } == {400: {"g": {("t", 3): 80}}}


def test_records_of_unknown_key_versions_are_skipped(tmp_path: Path) -> None:
    # Key version 3+ are KIP-848 consumer-group records: not ours to interpret.
    loaded = replay(
        tmp_path,
        [build_records([(b"\x00\x03\x00\x01g", b"\x00\x00whatever"), commit_record("g", 0, 9)], 1)],
    )
    assert loaded.skipped == 1
    assert loaded.offsets["g"][("t", 0)].offset == 9


def test_every_offset_value_version_decodes() -> None:
    for version in range(0, 5):
        value = OffsetCommitValue(
            offset=11, leader_epoch=3, metadata="md", commit_timestamp=99, expire_timestamp=200
        )
        decoded = decode_offset_value(value.encode_versioned(version))
        assert (decoded.offset, decoded.metadata, decoded.commit_timestamp) == (11, "md", 99)
        assert decoded.leader_epoch == (3 if version >= 3 else -1)
        assert decoded.expire_timestamp == (200 if version == 1 else -1)
    # The coordinator writes v1 exactly when a commit carries its own expiry.
    assert offset_commit_value(OffsetAndMetadata(1, expire_timestamp=5))[:2] == b"\x00\x01"
    assert offset_commit_value(OffsetAndMetadata(1))[:2] == b"\x00\x03"
