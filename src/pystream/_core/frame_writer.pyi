"""Contract of pystream._core.frame_writer (FrameWriter itself is cimport-only)."""

def receive_buffer(size: int) -> bytearray: ...  # uninitialised: the socket fills it
