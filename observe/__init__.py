"""Read-only views of a running pipeline: health, consumer lag, the DLQ, the warehouse's last
loads (`observe.status`), served by `segflow status`, `segflow tail` and the web console.

It reads and never writes: no consumer group is joined, no offset committed, no table created.
"""
