"""`PipelineStatus` as one screen of aligned text, for a person (pure: no I/O)."""

from __future__ import annotations

from datetime import datetime

from observe.status import EXIT_HEALTHY, EXIT_UNHEALTHY, SCHEMA_CHANGES_SHOWN, PipelineStatus

# Tables listed on the screen (most recently loaded first); JSON lists them all.
TABLES_SHOWN = 12


def age(seconds: float | None) -> str:
    """A compact duration: 42s, 3m 05s, 2h 10m, 3d 4h; "-" when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows as left-aligned columns (numbers right-aligned), two spaces apart."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(w) if cell.lstrip("-").isdigit() else cell.ljust(w)
            for cell, w in zip(row, widths, strict=True)
        ]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def render(status: PipelineStatus) -> str:
    """The whole screen, ending with the verdict and the problems."""
    now = status.checked_at
    verdict = {EXIT_HEALTHY: "HEALTHY", EXIT_UNHEALTHY: "UNHEALTHY"}.get(
        status.exit_code, "UNKNOWN"
    )
    lines = [f"segflow status  {_when(now)} UTC  {verdict}", ""]

    lines.append("components")
    lines += _table([[c.name, c.state, c.url, c.detail] for c in status.components]) or [
        "  (none checked)"
    ]

    lines += ["", "consumer lag"]
    rows: list[list[str]] = []
    for g in status.groups:
        members = f"{g.members} member{'s' if g.members != 1 else ''}"
        total = "-" if g.state == "missing" else str(g.total)
        rows.append([g.group, f"{g.state}, {members}", total, ""])
        for topic, lag in g.by_topic().items():
            parts = [p for p in g.partitions if p.topic == topic]
            unknown = sum(1 for p in parts if p.lag is None)
            note = f"{len(parts)} partitions" + (f", {unknown} never committed" if unknown else "")
            rows.append([f"  {topic}", "", str(lag), note])
    lines += _table(rows) or ["  (not checked)"]

    lines += [""]
    dlq = status.dlq
    if dlq is None:
        lines.append("dlq  (not checked)")
    else:
        newest = f", newest {_when(dlq.newest_at)}" if dlq.newest_at else ""
        lines.append(f"dlq  {dlq.topic}: {dlq.depth} records{newest}")
        lines += _table(
            [[_when(r.at), r.code, r.to_dict()["origin"] or "-", r.reason] for r in dlq.newest]
        )

    lines += [""]
    if status.tables is None:
        lines.append("warehouse  (not checked)")
    else:
        loaded = sorted(
            status.tables,
            key=lambda t: (t.last_load is not None, t.last_load or now),
            reverse=True,
        )
        lines.append(f"warehouse  {len(loaded)} tables loaded by the sink")
        rows = [["table", "last load", "age", "newest event"]]
        rows += [
            [
                f"{t.schema}.{t.table}",
                _when(t.last_load),
                age(t.freshness_s(now)),
                _when(t.newest_event),
            ]
            for t in loaded[:TABLES_SHOWN]
        ]
        if loaded:
            lines += _table(rows)
        if len(loaded) > TABLES_SHOWN:
            lines.append(f"  ... {len(loaded) - TABLES_SHOWN} more (--output json lists all)")

    changes = status.schema_changes
    if changes is not None:
        sightings = sum(c.occurrences for c in changes)
        lines += ["", f"schema changes (24 h)  {len(changes)} ({sightings} sightings)"]
        lines += _table(
            [
                [
                    _when(c.last_seen),
                    f"{c.schema}.{c.table}",
                    c.column,
                    c.change,
                    c.value_type or "",
                ]
                for c in changes[:SCHEMA_CHANGES_SHOWN]
            ]
        )

    suppressed = "-" if status.suppressed_users is None else str(status.suppressed_users)
    lines += ["", f"suppressed users  {suppressed}"]

    if status.problems:
        lines += ["", "problems"] + [f"  - {p}" for p in status.problems]
    if status.unchecked:
        lines += ["", "not checked"] + [f"  - {u}" for u in status.unchecked]
    return "\n".join(lines) + "\n"
