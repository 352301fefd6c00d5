"""`resfam summary`: per-stage output shapes, depth as the papers count it, parameters and MACs."""
from __future__ import annotations

import json

import pytest

from resfam.cli import main
from resfam.summary import summarize
from tests.test_models_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# Depth as each paper counts it: conv and fc layers on the main path, projection shortcuts excluded.
PAPER_DEPTH = {
    "resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152,
    "resnet20": 20, "resnet110": 110, "preact_resnet164": 164, "resnext29_8x64d": 29, "seresnet50": 50,
    "densenet121": 121, "densenet_bc_100_12": 100, "dpn92": 92, "mobilenet_v1": 28, "squeezenet1_0": 18,
}


@pytest.mark.parametrize("name,depth", PAPER_DEPTH.items(), ids=list(PAPER_DEPTH))
def test_layer_count_as_the_paper_counts(name, depth):
    assert summarize(name, input_size=64)["layers"] == depth  # depth does not depend on the input size


def test_resnet50_summary_json_from_the_cli(capsys):
    assert main(["summary", "resnet50", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"layers", "params", "macs", "stages"} <= set(summary)
    assert summary["layers"] == 50 and summary["params"] == 25_557_032
    assert summary["macs"] == pytest.approx(4.09e9, rel=0.02)
    assert [s["output_shape"] for s in summary["stages"]] == [
        [64, 112, 112], [256, 56, 56], [512, 28, 28], [1024, 14, 14], [2048, 7, 7]
    ]
    assert [s["name"] for s in summary["stages"]] == ["stem", "layer1", "layer2", "layer3", "layer4"]


def test_input_size_and_text_output(capsys):
    assert main(["summary", "resnet20", "--input-size", "64"]) == 0
    text = capsys.readouterr().out
    assert "layers  20" in text and "0.27 M" in text and "64x16x16" in text
