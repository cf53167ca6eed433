"""The compiled core: CRC-32C, varints, record batches, compression, segments.

No asyncio, no sockets, no topics here: bytes in, bytes out, GIL released
where the work is large.  Importing this package fails loudly if the compiled
extensions are missing, rather than silently running slow fallbacks.
"""
