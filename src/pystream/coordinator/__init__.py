"""What the coordinators share (ownership of an internal topic's partitions)."""
