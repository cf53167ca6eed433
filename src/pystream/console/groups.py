"""Consumer groups: the list (state, members, total lag), one group (members and their
assignments, committed offset / end offset / lag per partition) and the offset reset,
allowed only while the group is Empty."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pystream.aio import AdminClient
from pystream.client.types import ConsumerGroupLag, GroupDescription, GroupListing
from pystream.errors import error_for_code

__all__ = ["GroupDetail", "GroupRow", "ResetRefused", "group_detail", "group_rows", "reset_offsets"]

RESET_TO = ("earliest", "latest", "timestamp")


class ResetRefused(error_for_code(25)):  # type: ignore[misc]
    """A reset of a group that is not Empty: nothing was committed.  Kafka's admin client
    fails the same commit with UNKNOWN_MEMBER_ID (the group has members)."""


@dataclass
class GroupRow:
    group_id: str
    state: str
    protocol_type: str
    members: int
    total_lag: int | None


@dataclass
class GroupDetail:
    description: GroupDescription
    lags: list[ConsumerGroupLag]

    @property
    def total_lag(self) -> int:
        return sum(row.lag or 0 for row in self.lags)


async def group_rows(admin: AdminClient) -> list[GroupRow]:
    listings = await admin.list_groups()
    if not listings:
        return []
    descriptions = await admin.describe_groups([g.group_id for g in listings])

    async def row(listing: GroupListing) -> GroupRow:
        description = descriptions[listing.group_id]
        lags = (
            await admin.list_consumer_group_lags(listing.group_id, description)
            if listing.protocol_type in ("consumer", "")
            else []  # Connect workers' groups and the like commit no offsets
        )
        return GroupRow(
            group_id=listing.group_id,
            state=description.state,
            protocol_type=listing.protocol_type,
            members=len(description.members),
            total_lag=sum(r.lag or 0 for r in lags) if lags else None,
        )

    # Each group's offsets come from its coordinator: ask them all at once.
    return list(await asyncio.gather(*(row(listing) for listing in listings)))


async def group_detail(admin: AdminClient, group_id: str) -> GroupDetail:
    """One group's description and lags; GROUP_ID_NOT_FOUND for a group Kafka does not
    know (it describes one as Dead, without members or offsets)."""
    description = (await admin.describe_groups([group_id]))[group_id]
    lags = await admin.list_consumer_group_lags(group_id, description)
    if description.state == "Dead" and not lags:
        raise error_for_code(69)(f"Consumer group {group_id!r} does not exist.")
    return GroupDetail(description, lags)


async def reset_offsets(
    admin: AdminClient, group_id: str, to: str, timestamp_ms: int | None, topic: str = ""
) -> dict[object, int]:
    """Commit the group's offsets for every partition it has offsets for (or only
    ``topic``'s) at the log start, the log end or the first record at/after
    ``timestamp_ms``.  Refused (:class:`ResetRefused`) unless the group is Empty."""
    description = (await admin.describe_groups([group_id]))[group_id]
    if description.state != "Empty":
        raise ResetRefused(
            f"group {group_id!r} is {description.state} with {len(description.members)} "
            f"member(s): offsets can be reset only while it is Empty (stop its consumers "
            f"first)"
        )
    if to not in RESET_TO:
        raise ValueError(f"reset to {to!r}: choose one of {', '.join(RESET_TO)}")
    if to == "timestamp" and timestamp_ms is None:
        raise ValueError("reset to a timestamp needs the timestamp")
    committed = await admin.list_consumer_group_offsets(group_id)
    existing = set(await admin.list_topics(internal=True))
    partitions = sorted(
        tp for tp in committed if tp.topic in existing and (not topic or tp.topic == topic)
    )
    if not partitions:
        raise ValueError(
            f"group {group_id!r} has no committed offsets"
            + (f" for topic {topic!r}" if topic else "")
            + " to reset"
        )
    how = "to-datetime" if to == "timestamp" else f"to-{to}"
    targets = await admin.consumer_group_reset_targets(group_id, partitions, how, timestamp_ms or 0)
    await admin.alter_consumer_group_offsets(group_id, targets)
    return dict(targets)
