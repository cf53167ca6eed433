"""The asyncio broker: listeners, connections, request dispatch, purgatories."""
