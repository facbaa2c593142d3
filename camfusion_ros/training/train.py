"""``camfusion-train``: train CAMFusion on descriptor shards, on one process or under torchrun (DDP).

Run state lives in RUNDIR: ``metrics.jsonl``, ``metrics.png``, ``checkpoint/``
(model, loss parameters and optimizer as safetensors + step/config/optimizer
scalars as JSON; written atomically) and ``final/`` (a model checkpoint the
``camfusion`` fuser loads). Randomness is derived from (seed, rank, step), so
the saved step restores the data order and RNG exactly on ``--resume``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from camfusion_ros.cli_errors import report_error
from camfusion_ros.core.camfusion.checkpoint import CheckpointError, save_checkpoint
from camfusion_ros.core.fusion import make_fuser
from camfusion_ros.core.output_folder import (OutputFolderError, check_replaceable_folder, claim_outputs,
                                              fresh_folder, recover_swap)
from camfusion_ros.training.config import ConfigError, TrainConfig, load_config, to_dict
from camfusion_ros.training.baselines import build_fuser_model
from camfusion_ros.training.losses import CamFusionLoss
from camfusion_ros.training.sampler import InstanceSampler, best_views
from camfusion_ros.training.shards import (DescriptorSet, ShardError, find_text_embeddings, load_split,
                                           read_text_embeddings)
from camfusion_ros.training.synthetic import UNSEEN_FILE, ensure_synthetic

STATE_FORMAT = "camfusion-train-state/1"
STATE_FILES = frozenset({"state.json", "state.safetensors"})
RUN_FILES = ("checkpoint", "metrics.jsonl", "final", "metrics.png")   # what a run writes in its folder


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Cyclic cosine from the cycle's peak to lr_min over lr_period steps; each cycle's peak is decayed."""
    cycle, pos = divmod(int(step), cfg.lr_period)
    peak = cfg.lr_max * cfg.lr_cycle_decay**cycle
    peak = max(peak, cfg.lr_min)
    return cfg.lr_min + 0.5 * (peak - cfg.lr_min) * (1.0 + math.cos(math.pi * pos / cfg.lr_period))


class Trainee(nn.Module):
    """Model + loss parameters in one module, so DDP synchronises both."""

    def __init__(self, model: nn.Module, loss: CamFusionLoss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, views, views_valid, text, class_ids, unseen, unseen_valid):
        fused = self.model(views, views_valid)
        out = self.loss(fused, text, class_ids, unseen, unseen_valid)
        out["fused"] = fused
        return out


# ---- train state (no pickle: tensors in safetensors, scalars in JSON) ----

def save_state(path: Path, trainee: Trainee, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig, extra: dict) -> None:
    tensors = {f"trainee.{k}": v.detach().cpu().contiguous() for k, v in trainee.state_dict().items()}
    sd = opt.state_dict()
    scalars: dict = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    doc = {
        "format": STATE_FORMAT, "step": step, "config": to_dict(cfg), "param_groups": sd["param_groups"],
        "optim_scalars": scalars, "extra": extra,
    }
    check_replaceable_folder(path, STATE_FILES, "state.json", "format", "training state", CheckpointError)
    with fresh_folder(path) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))


def load_state(path: Path, trainee: Trainee, opt: torch.optim.Optimizer) -> dict:
    try:
        doc = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except FileNotFoundError as e:
        raise CheckpointError(f"training checkpoint incomplete: {e.filename} missing") from None
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise CheckpointError(f"corrupt training checkpoint in {path}: {e}") from None
    if doc.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a CAMFusion training checkpoint")
    own = {k[len("trainee."):]: v for k, v in tensors.items() if k.startswith("trainee.")}
    want = {k: tuple(v.shape) for k, v in trainee.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in own.items()}
    if want != got:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        raise CheckpointError(f"training checkpoint {path} does not match the config: {', '.join(bad[:4])} differ")
    trainee.load_state_dict(own, strict=True)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for k, v in doc["optim_scalars"].items():
        pid, key = k.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    return doc


# ---- helpers ----

def param_groups(trainee: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on the linear layers' weight matrices only.

    Norms, biases, the latent query and the loss's temperature and bias are not
    decayed: shrinking them towards 0 changes what the model computes, not its
    capacity."""
    decay = {id(m.weight) for m in trainee.modules() if isinstance(m, nn.Linear)}
    params = list(trainee.parameters())
    return [
        {"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]


# Settings a resumed run may change: when and how much it reports, not what it optimises.
RESUME_MAY_CHANGE = frozenset({"epochs", "max_steps", "val_every", "checkpoint_every", "log_every", "num_threads"})


def check_resumable(ckpt_dir: Path, cfg: TrainConfig, world: int) -> None:
    """Refuse (one line) to continue a run whose model, loss, data, schedule or world size changed."""
    try:
        doc = json.loads((ckpt_dir / "state.json").read_text())
        saved, saved_world = doc["config"], int(doc["extra"]["world_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"corrupt training checkpoint in {ckpt_dir}: {e}") from None
    now = json.loads(json.dumps(to_dict(cfg)))

    def diff(a, b, where=""):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not where and k in RESUME_MAY_CHANGE:
                    continue
                yield from diff(a.get(k), b.get(k), f"{where}{k}.")
        elif a != b:
            yield f"{where[:-1]} ({a!r} -> {b!r})"

    changed = list(diff(saved, now))
    if changed:
        raise CheckpointError(
            f"cannot resume {ckpt_dir}: the config changed in {', '.join(changed[:4])}"
            f"{' ...' if len(changed) > 4 else ''}; train into a new --out or restore the config")
    if saved_world != world:
        raise CheckpointError(
            f"cannot resume {ckpt_dir}: it was trained by {saved_world} process(es), this run has {world}; "
            f"the data order and per-rank randomness depend on it (use --nproc_per_node {saved_world})")


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def topk_accuracy(fused: np.ndarray, text: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    scores = fused @ text.T
    order = np.argsort(-scores, axis=1)
    return {f"top{k}": float((order[:, :k] == labels[:, None]).any(1).mean()) for k in ks}


def fuse_split(model: nn.Module, views: np.ndarray, valid: np.ndarray, device: torch.device, use_cuda: bool) -> np.ndarray:
    """The model's fused embeddings of (views, valid) in eval mode, in chunks."""
    was_training = model.training
    model.eval()
    fused = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
        for s in range(0, len(views), 4096):
            v = torch.from_numpy(views[s : s + 4096]).to(device)
            m = torch.from_numpy(valid[s : s + 4096]).to(device)
            fused.append(model(v, m).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(fused)


def split_metrics(model: nn.Module, data: DescriptorSet, text: np.ndarray, views: int, device: torch.device,
                  use_cuda: bool, prefix: str) -> dict:
    """Top-1/top-5 of ``model`` and top-1 of average pooling on ``data``'s best views, keys ``<prefix>_...``."""
    v, m = best_views(data, views)
    acc = topk_accuracy(fuse_split(model, v, m, device, use_cuda), text, data.class_ids)
    avg = topk_accuracy(make_fuser("avg").fuse(v, m), text, data.class_ids)
    return {f"{prefix}_top1": acc["top1"], f"{prefix}_top5": acc["top5"], f"{prefix}_avg_top1": avg["top1"]}


def unseen_class_subset(root: Path, data: DescriptorSet) -> DescriptorSet | None:
    """The instances of ``data`` whose classes the data root lists as never trained on (``unseen_classes.json``)."""
    path = root / UNSEEN_FILE
    if not path.is_file():
        return None
    unseen = set(json.loads(path.read_text()))
    keep = np.isin(data.class_ids, [i for i, n in enumerate(data.class_names) if n in unseen])
    if not keep.any():
        return None
    return DescriptorSet(data.class_ids[keep], data.descriptors[keep], data.view_valid[keep], data.visibility[keep],
                         data.class_names, data.model, data.view_source[keep])


def _append_jsonl(path: Path, rec: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines a killed run logged after its last checkpoint (they are logged again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(l + "\n" for l in keep))


def plot_metrics(metrics: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    tr = [r for r in recs if "loss" in r]
    va = [r for r in recs if "val_top1" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if tr:
        a.plot([r["step"] for r in tr], [r["loss"] for r in tr], label="loss")
        a.plot([r["step"] for r in tr], [r["loss_class"] for r in tr], label="class loss")
        if "loss_multiview" in tr[0]:
            a.plot([r["step"] for r in tr], [r["loss_multiview"] for r in tr], label="multiview loss")
        a.set_yscale("log")
    a.set_xlabel("step"), a.set_title("training loss"), a.legend()
    if va:
        b.plot([r["step"] for r in va], [r["val_top1"] for r in va], "o-", label="camfusion top-1")
        b.plot([r["step"] for r in va], [r["val_top5"] for r in va], "o-", label="camfusion top-5")
        b.axhline(va[-1]["val_avg_top1"], color="gray", ls="--", label="avg pooling top-1")
    if tr:
        b.plot([r["step"] for r in tr], [r["train_top1"] for r in tr], alpha=0.5, label="train batch top-1")
    b.set_xlabel("step"), b.set_title("accuracy"), b.set_ylim(0, 1), b.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


# ---- the run ----

def train(cfg: TrainConfig, out: str | Path, resume: bool = False, stop_at_step: int | None = None, progress: bool = True) -> dict:
    """Train (or continue) a run; returns the last validation metrics. ``stop_at_step`` stops early (as a kill would)."""
    rank, world, local_rank = _dist_env()
    use_cuda = torch.cuda.is_available()
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(out)
    try:
        root = Path(cfg.data.root)
        if rank == 0:
            claim_outputs(out, "camfusion-train", RUN_FILES)
            if cfg.data.synthetic is not None:
                ensure_synthetic(root, cfg.data.synthetic)
        if distributed:
            dist.barrier()
        names, text_np = read_text_embeddings(find_text_embeddings(root / cfg.data.train_split))
        train_set = load_split(root / cfg.data.train_split, names)
        val_set = load_split(root / cfg.data.val_split, names)
        test_set = load_split(root / cfg.data.test_split, names) if cfg.data.test_split else None
        if train_set.dim != cfg.model.input_dim or text_np.shape[1] != cfg.model.input_dim:
            raise ConfigError(
                f"model.input_dim {cfg.model.input_dim} does not match the data (descriptors {train_set.dim}, text {text_np.shape[1]})"
            )
        local_bs = cfg.batch_size // world
        if local_bs <= 0:
            raise ConfigError(f"batch_size {cfg.batch_size} is smaller than the number of processes {world}")
        steps_per_epoch = max(1, math.ceil(len(train_set) / cfg.batch_size))
        total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch

        torch.manual_seed(cfg.seed)
        trainee = Trainee(build_fuser_model(cfg.arch, cfg.model), CamFusionLoss(cfg.loss)).to(device)
        opt = torch.optim.AdamW(param_groups(trainee, cfg.weight_decay), lr=cfg.lr_max, betas=cfg.betas)
        start = 0
        ckpt_dir = out / "checkpoint"
        metrics = out / "metrics.jsonl"
        if resume:
            if rank == 0:   # the one writer of checkpoints repairs an interrupted swap before anyone reads
                recover_swap(ckpt_dir)
            if distributed:
                dist.barrier()
            if not (ckpt_dir / "state.json").is_file():
                raise CheckpointError(f"nothing to resume: no training checkpoint in {ckpt_dir}")
            check_resumable(ckpt_dir, cfg, world)
            start = int(load_state(ckpt_dir, trainee, opt)["step"])
            if rank == 0:
                _truncate_metrics(metrics, start)
        elif rank == 0 and metrics.exists():
            metrics.unlink()
        net = nn.parallel.DistributedDataParallel(trainee) if distributed else trainee
        sampler = InstanceSampler(train_set, cfg.sampler)
        text_all = torch.from_numpy(text_np).to(device)
        def validate(step: int) -> dict:
            acc = split_metrics(trainee.model, val_set, text_np, cfg.eval_views, device, use_cuda, "val")
            return {"step": step, **acc}

        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, disable=not progress or rank != 0, desc="camfusion-train", dynamic_ncols=True)
        last_val: dict = {}
        trainee.train()
        t0 = time.time()
        step = start
        for step in range(start, total):
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            rng = np.random.default_rng([cfg.seed, rank, step])
            torch.manual_seed(cfg.seed * 1_000_003 + step * 4099 + rank)
            b = sampler.sample(local_bs, rng)
            cls = torch.from_numpy(b.class_ids).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
                res = net(
                    torch.from_numpy(b.views).to(device), torch.from_numpy(b.views_valid).to(device),
                    text_all[cls], cls, torch.from_numpy(b.unseen).to(device), torch.from_numpy(b.unseen_valid).to(device),
                )
            opt.zero_grad(set_to_none=True)
            res["loss"].backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(trainee.parameters(), cfg.grad_clip)
            opt.step()
            done = step + 1
            bar.update(1)
            if rank == 0 and (done % cfg.log_every == 0 or done == total):
                pred = (res["fused"].detach().float() @ text_all.T).argmax(1)
                rec = {
                    "step": done, "epoch": done / steps_per_epoch, "lr": lr,
                    "loss": float(res["loss"].detach()), "loss_class": float(res["loss_class"].detach()),
                    "train_top1": float((pred == cls).float().mean()),
                    "temperature": float(trainee.loss.temperature.detach()), "bias": float(trainee.loss.bias.detach()),
                    "elapsed_s": time.time() - t0,
                }
                if "loss_multiview" in res:
                    rec["loss_multiview"] = float(res["loss_multiview"].detach())
                _append_jsonl(metrics, rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
            if done % cfg.val_every == 0 or done == total:
                if rank == 0:
                    last_val = validate(done)
                    _append_jsonl(metrics, last_val)
                    bar.set_postfix(val_top1=f"{last_val['val_top1']:.3f}")
            if done % cfg.checkpoint_every == 0 or done == total:
                if rank == 0:
                    save_state(ckpt_dir, trainee, opt, done, cfg, {"world_size": world})
                if distributed:
                    dist.barrier()
            if stop_at_step is not None and done >= stop_at_step:
                break
        bar.close()
        finished = step + 1 >= total
        if rank == 0 and finished and test_set is not None:
            last_val = {**last_val, **split_metrics(trainee.model, test_set, text_np, cfg.eval_views, device, use_cuda, "test")}
            unseen = unseen_class_subset(root, test_set)
            if unseen is not None:
                last_val.update(split_metrics(trainee.model, unseen, text_np, cfg.eval_views, device, use_cuda,
                                              "test_unseen_classes"))
        if rank == 0:
            if finished and cfg.arch == "camfusion":   # baselines stay in the run's training state
                save_checkpoint(
                    out / "final", trainee.model, cfg.model,
                    extra={"step": total, "temperature": float(trainee.loss.temperature.detach()), "bias": float(trainee.loss.bias.detach()),
                           "class_names": names, "data": str(root)},
                )
            if metrics.is_file():
                plot_metrics(metrics, out / "metrics.png")
        return last_val
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="camfusion-train", description="Train CAMFusion on precomputed descriptor shards.")
    ap.add_argument("--config", required=True, help="training/configs/NAME.yaml")
    ap.add_argument("--out", help="run directory (default: out/runs/<config name>)")
    ap.add_argument("--resume", action="store_true", help="continue from RUNDIR/checkpoint")
    ap.add_argument("--max-steps", type=int, help="override the config's max_steps (e.g. a short smoke run)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.max_steps is not None:
            if args.max_steps <= 0:
                raise ConfigError("--max-steps must be positive")
            cfg.max_steps = args.max_steps
        out = Path(args.out) if args.out else Path("out/runs") / Path(args.config).stem
        res = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, ShardError, CheckpointError, OutputFolderError) as e:
        return report_error(e)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"run": str(out), **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
