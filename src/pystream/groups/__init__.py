"""Consumer groups: the group coordinator and committed offsets in ``__consumer_offsets``."""
