"""Group API handlers (FindCoordinator, JoinGroup ... OffsetFetch, DeleteGroups, OffsetDelete).

The broker collects the handlers in this module's namespace; they are written
in the modules below, one per concern, and re-exported here.
"""

from pystream.groups.admin_api import (
    handle_delete_groups,
    handle_describe_groups,
    handle_list_groups,
)
from pystream.groups.membership_api import (
    handle_find_coordinator,
    handle_heartbeat,
    handle_join_group,
    handle_leave_group,
    handle_sync_group,
)
from pystream.groups.offsets_api import (
    handle_offset_commit,
    handle_offset_delete,
    handle_offset_fetch,
)

__all__ = [
    "handle_delete_groups",
    "handle_describe_groups",
    "handle_find_coordinator",
    "handle_heartbeat",
    "handle_join_group",
    "handle_leave_group",
    "handle_list_groups",
    "handle_offset_commit",
    "handle_offset_delete",
    "handle_offset_fetch",
    "handle_sync_group",
]
