"""The Snowflake sink: per-partition micro-batches loaded exactly once into Segment's layout.

Pure logic: `batcher` (buffers and flush triggers), `rows` (clean events -> warehouse rows),
`evolution` (column typing and schema changes), `ddl`/`dml` (SQL text), `staging` (the Parquet
file of a flush). Shells: `loader` (one transaction per flush), `offsets`, `consumer`.
"""
