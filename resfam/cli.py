"""The `resfam` command. Each subcommand is one `add_<name>` function registered in SUBCOMMANDS."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from resfam.data import SPLITS, imagenet_labels, load_dataset, preprocessing
from resfam.evaluate import accuracy, evaluate, onnx_predictor
from resfam.export import export_version
from resfam.factory import create_model
from resfam.provenance import provenance, utc_now
from resfam.registry import get_entry, list_models
from resfam.summary import format_summary, summarize
from resfam.train import OPTIMIZERS, TrainConfig, load_trained, train

Subparsers = Any  # argparse's _SubParsersAction is private
_TRAIN_DEFAULTS = TrainConfig(arch="", out="")


def add_list(sub: Subparsers) -> None:
    p = sub.add_parser("list", help="registered architectures with parameters and reference accuracy")
    p.add_argument("--family", help="only this family")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    rows = [("name", "family", "params", "input", "top-1")]
    for name in list_models(args.family):
        entry = get_entry(name)
        with torch.device("meta"):  # shapes only: no memory, no init cost
            params = sum(p.numel() for p in create_model(name).parameters())
        top1 = f"{entry.reference_top1:.2f}" if entry.reference_top1 is not None else "-"
        rows.append((name, entry.family, f"{params / 1e6:.2f}M", "x".join(map(str, entry.data_config.input_size)), top1))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return 0


def add_summary(sub: Subparsers) -> None:
    p = sub.add_parser("summary", help="per-stage output shapes, layers as the papers count them, parameters, MACs")
    p.add_argument("arch")
    p.add_argument("--input-size", type=int, help="square input side (default: the architecture's own)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    summary = summarize(args.arch, args.input_size)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def add_train(sub: Subparsers) -> None:
    d = _TRAIN_DEFAULTS
    p = sub.add_parser("train", help="train an architecture; writes OUT/best.pt and OUT/run.json")
    p.add_argument("arch")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--dataset", default=d.dataset, help='"digits" or an ImageFolder path (default: %(default)s)')
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--in-chans", type=int, default=d.in_chans, help="input channels (digits: 1)")
    p.add_argument("--drop-path-rate", type=float, default=d.drop_path_rate)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                   help="random shift/rotation of training images")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default: %(default)s)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    run = train(cfg)
    print(f"{cfg.arch}: test top-1 {run['test_top1']:.2%} ({run['test_correct']}/{run['test_samples']}), "
          f"val {run['val_top1']:.2%} at epoch {run['best_epoch']}, {run['seconds']:.0f} s -> {cfg.out}")
    return 0


def add_export(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="export to ONNX into the model repository (OUT/NAME/VERSION)")
    p.add_argument("arch")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="best.pt of a `resfam train` run (run.json beside it)")
    source.add_argument("--pretrained", help='"torchvision", "timm" (downloads), a state_dict path, or "random"')
    p.add_argument("--name", required=True)
    p.add_argument("--version", default="1")
    p.add_argument("--out", type=Path, default=Path("models"), help="model repository (default: %(default)s)")
    p.add_argument("--num-classes", type=int, help="with --pretrained: classes of the weights")
    p.add_argument("--in-chans", type=int, help="with --pretrained: input channels of the weights")
    p.add_argument("--seed", type=int, default=0, help="with --pretrained random: weight seed")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |ONNX - PyTorch|")
    p.add_argument("--force", action="store_true", help="replace an existing version")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    command = shlex.join(["resfam", *args.argv])
    src = _trained_source(args, command) if args.checkpoint else _pretrained_source(args, command)
    card = export_version(src.model, args.out, args.name, args.version, labels=src.labels,
                          data_config=src.model.data_config, provenance=src.provenance, metrics=src.metrics,
                          measure=src.measure, opset=args.opset, tolerance=args.tolerance, force=args.force)
    print(f"exported {args.out / args.name / args.version}: max |ONNX - PyTorch| = {card['export']['max_abs_diff']:.3g} "
          f"(tolerance {args.tolerance:g})")
    if "test_top1" in card["metrics"]:
        m = card["metrics"]
        print(f"ONNX test top-1 {m['test_top1']:.2%} ({m['test_correct']}/{m['test_samples']}); "
              f"PyTorch at training {m['pytorch_test_top1']:.2%}")
    return 0


@dataclass
class ExportSource:
    """What `resfam export` publishes: weights plus everything model.json says about them."""

    model: nn.Module
    labels: list[str]
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    measure: Callable[[Path], dict[str, Any]] | None = None


def _trained_source(args: argparse.Namespace, command: str) -> ExportSource:
    """A `resfam train` run: labels, preprocessing and provenance from its run.json; accuracy re-measured on ONNX."""
    model, run = load_trained(args.checkpoint)
    if run["arch"] != args.arch:
        raise SystemExit(f"{args.checkpoint} was trained as {run['arch']}, not {args.arch}")
    labels = run["labels"]
    spec = preprocessing(model.data_config)

    def measure(onnx_path: Path) -> dict[str, Any]:
        acc = accuracy(onnx_predictor(onnx_path), labels, spec, load_dataset(run["dataset"], "test"))
        return {"test_top1": acc.top1, "test_correct": acc.correct, "test_samples": acc.total}

    metrics = {"val_top1": run["val_top1"], "pytorch_test_top1": run["test_top1"], "split": "test",
               "split_seed": run["split_seed"], "train_samples": run["train_samples"]}
    prov = {"source": "resfam train", **run["provenance"], "run_dir": str(args.checkpoint.parent),
            "checkpoint": str(args.checkpoint), "export_command": command,
            "exported": utc_now()}
    return ExportSource(model, labels, metrics, prov, measure)


def _pretrained_source(args: argparse.Namespace, command: str) -> ExportSource:
    """Upstream or local weights, or a seeded random init (for plumbing and load tests)."""
    kind = args.pretrained if args.pretrained in ("torchvision", "timm", "random") else "checkpoint"
    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
    torch.manual_seed(args.seed)
    model = create_model(args.arch, pretrained=None if kind == "random" else args.pretrained, **overrides)
    n = model.data_config.num_classes
    labels = imagenet_labels() if kind != "random" and n == 1000 else [f"class_{i}" for i in range(n)]
    reference = get_entry(args.arch).reference_top1  # the registry keeps percent; model.json keeps fractions
    metrics = {"reference_top1": reference / 100} if kind in ("torchvision", "timm") and reference is not None else {}
    prov = {"source": kind, **provenance(command, args.seed if kind == "random" else None), "run_dir": None}
    if kind == "checkpoint":
        prov["weights"] = str(args.pretrained)
    return ExportSource(model, labels, metrics, prov)


def add_eval(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="top-1 accuracy of an exported model or a checkpoint on a data split")
    p.add_argument("target", type=Path, help="models/NAME[/VERSION] (ONNX) or a best.pt with run.json beside it")
    p.add_argument("--dataset", default="digits", help='"digits" or an ImageFolder path (default: %(default)s)')
    p.add_argument("--split", choices=SPLITS, default="test")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    print(f"{args.target} on {args.dataset}/{args.split}: top-1 {evaluate(args.target, args.dataset, args.split)}")
    return 0


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_list, add_summary, add_train, add_export, add_eval]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resfam", description="The ResNet family: list, train, export, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)
