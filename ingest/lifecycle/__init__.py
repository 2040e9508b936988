"""The lifecycle room: retention of raw and the vault, raw's day partitions."""
