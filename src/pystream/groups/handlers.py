"""Group API handlers (FindCoordinator, JoinGroup ... OffsetFetch)."""
