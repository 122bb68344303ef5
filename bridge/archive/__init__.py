"""The durable side of the archive: the on-disk spool and the non-spectrum points (markers, health)."""
