"""The plain FastAPI + ONNX Runtime peer of loadtests/plain_server.py: starts, answers as our in-process path
does, and stops leaving nothing behind."""
from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from loadtests.inprocess import NO_PIXEL_LIMIT, session_for
from loadtests.photos import digit_pngs
from loadtests.plain_server import PlainServer, model_of
from loadtests.procs import process_tree
from loadtests.scenarios.common import digits_config
from loadtests.server import ROOT, free_port
from serve.runtime.preprocess import decode_and_preprocess
from serve.runtime.repository import load_artifact


def test_plain_server_classifies_like_the_inprocess_path_and_stops_clean(tmp_path):
    config = digits_config()
    config["http"].update(host="127.0.0.1", port=free_port())
    name, version, decode, threads = model_of(config)
    assert threads == int(next(m for m in config["models"] if m["name"] == name)["num_cpus"])
    artifact = load_artifact(ROOT / "models", name, version)
    model = session_for(artifact, "cpu", 1, [])
    pngs = digit_pngs(8)
    expected = [int(np.argmax(model.predict(decode_and_preprocess(png, artifact.preprocessing, NO_PIXEL_LIMIT,
                                                                  decode)[None])[0])) for png in pngs]
    server = PlainServer(config, tmp_path)
    with server:
        tree = process_tree(server.pid)
        got = [httpx.post(f"{server.url}/classify", content=png, params={"k": 3}, timeout=30).json()
               for png in pngs]
        bad = httpx.post(f"{server.url}/classify", content=b"not an image", timeout=30)
    assert [g["predictions"][0]["index"] for g in got] == expected
    assert all(len(g["predictions"]) == 3 and g["model"] == name for g in got)
    assert bad.status_code == 400
    assert "Finished server process" in server.log_path.read_text()  # SIGTERM: uvicorn shut down gracefully
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()]
    assert not server.ready()


def test_the_plain_server_takes_the_models_settings_or_onnx_runtimes_defaults():
    config = {"default_model": "m", "models": [{"name": "m", "version": 3, "decode": "exact", "num_cpus": 1.5}]}
    assert model_of(config) == ("m", "3", "exact", 1)  # whole cores, as resfam-serve gives its replicas threads
    assert model_of({"default_model": "m"}) == ("m", "latest", "fast", 0)  # 0: one thread per core
