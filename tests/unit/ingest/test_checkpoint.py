from __future__ import annotations

from pathlib import Path

from ingest.checkpoint import Checkpoint


def test_resume_points_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "cp.jsonl"
    cp = Checkpoint(path).load()
    assert cp.start_line("a.gz", 10) == 0
    cp.record("a.gz", 10, 500, done=False)
    cp.record("b.gz", 20, 900, done=True)
    cp.record("a.gz", 10, 1000, done=False)
    cp.close()
    with path.open("ab") as f:
        f.write(b'{"file": "a.gz", "size": 10, "li')  # torn by a crash
    again = Checkpoint(path).load()
    assert again.start_line("a.gz", 10) == 1000
    assert again.start_line("b.gz", 20) is None
    assert again.start_line("b.gz", 21) == 0  # the file changed: read it again
    assert again.start_line("c.gz", 1) == 0
