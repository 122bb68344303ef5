"""The bridge watching itself: the loss ledger (metrics), /healthz, logs and the status line."""
