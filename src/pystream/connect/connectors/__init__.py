"""Connect's built-in connectors (each module imported on its own, lazily)."""
