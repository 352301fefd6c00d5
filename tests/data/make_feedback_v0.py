"""Writes feedback_v0.sqlite with the store as it was before its schema was versioned (commit e1a8f7e),
so that tests can check today's store adopts such a file with its rows. Run from the project root:
`.venv/bin/python tests/data/make_feedback_v0.py`."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

OLD_COMMIT = "e1a8f7e"
TARGET = Path(__file__).with_name("feedback_v0.sqlite")


def old_store_module():
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:serve/ab/store.py"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_store.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_store", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["old_store"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return module


def main() -> None:
    old = old_store_module()
    TARGET.unlink(missing_ok=True)
    store = old.FeedbackStore(TARGET, max_rows=1000, retention_s=10 * 365 * 86400)
    # arm a: 4 requests (one with two images), b: 2; feedback on some; b mirrored as a shadow of a's first two
    store.record([old.Prediction("a-0", 0, "a", "a/1", 1, 0.9, 0.010), old.Prediction("a-0", 1, "a", "a/1", 2, 0.8, 0.010)])
    for i, (predicted, latency) in enumerate([(1, 0.020), (3, 0.030), (1, 0.040)], start=1):
        store.record([old.Prediction(f"a-{i}", 0, "a", "a/1", predicted, 0.7, latency)])
    for i in range(2):
        store.record([old.Prediction(f"b-{i}", 0, "b", "b/1", 1, 0.6, 0.050)])
    store.record_shadow([old.Prediction("a-0", 0, "b", "b/1", 1, 0.5, 0.060),
                         old.Prediction("a-1", 0, "b", "b/1", 2, 0.5, 0.070)])
    for rid, label in [("a-0", 1), ("a-1", 1), ("a-2", 1), ("b-0", 1)]:
        assert store.add_feedback(rid, 0, label)
    store.close()
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
