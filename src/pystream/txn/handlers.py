"""Producer-id and transaction API handlers (InitProducerId ... EndTxn)."""
