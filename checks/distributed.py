"""Several processes on the CPU for distributed-equivalence: a target's distributed step run by G gloo
processes, each on its share of a global batch, beside one process on the whole batch; and the step of
``videocoop train`` under torchrun, declared for our own model.

The processes are forked (the model, its target and their declared callables are inherited, nothing is
pickled), join a gloo group through a file in a temporary folder (no port), and write what they computed
to files there. Nothing here manages a run: torchrun does that for training; this only starts the few
processes one comparison needs, and only when asked (``python -m checks --spawn``).
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from .core import AuditTarget, Skip
from .models import copy_model

#: Seconds the processes may take together before they are stopped (a collective some process never reached).
TIMEOUT = 300.0


@dataclass
class RankRun:
    """What one process computed: the trainable tensors' gradients after each step, the tensors after the last."""

    rank: int
    size: int
    grads: list[dict[str, torch.Tensor | None]] = field(default_factory=list)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    error: str | None = None  # "Type: message at file:line" when the step raised


def _optimizer(target: AuditTarget, model: nn.Module) -> torch.optim.Optimizer:
    if target.make_optimizer is not None:
        return target.make_optimizer(model)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])


def _process(target: AuditTarget, model: nn.Module, rank: int, size: int, batch, steps: int, folder: str) -> None:
    """One forked process: join the group, take ``steps`` distributed steps on its share, write what it found."""
    out = RankRun(rank, size)
    try:
        torch.set_num_threads(1)  # the processes share the machine's cores
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous{size}", rank=rank, world_size=size)
        x, y, mask = batch
        share = slice(rank, None, size)  # as GlobalBatchSampler and DistributedSampler cut a batch
        opt = _optimizer(target, model)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for _ in range(steps):
            loss = target.distributed_step(model, x[share], y[share], None if mask is None else mask[share], opt,
                                           rank, size)
            out.losses.append(float(getattr(loss, "loss", loss)) if loss is not None else float("nan"))
            out.grads.append({n: None if p.grad is None else p.grad.detach().clone() for n, p in trainable.items()})
        out.params = {n: p.detach().clone() for n, p in trainable.items()}
        dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001: reported by the parent, naming where it raised
        from .trace import audited_code

        frames = traceback.extract_tb(e.__traceback__)
        mine = next((f for f in reversed(frames) if audited_code(f.filename)), frames[-1] if frames else None)
        where = f" at {mine.filename}:{mine.lineno} ({mine.name})" if mine is not None else ""
        out.error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}{where}"
    finally:
        try:
            torch.save(out.__dict__, os.path.join(folder, f"rank{size}_{rank}.pt"))
        finally:
            os._exit(0)


def run_worlds(target: AuditTarget, sizes: tuple[int, ...], batch, steps: int) -> dict[int, list[RankRun]]:
    """Every world of ``sizes`` (1 for the reference) at once, each process forked from here; by size, by rank.

    Raises:
        Skip: this platform cannot fork.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        raise Skip("this platform cannot fork processes (no 'fork' start method): run on Linux")
    model = copy_model(target.model)
    if any(t.device.type != "cpu" for t in model.parameters()):
        model = model.cpu()  # gloo runs on the CPU, and a forked process cannot use the parent's CUDA
    batch = tuple(None if t is None else t.cpu() for t in batch)
    importlib.import_module("torch._dynamo")  # DDP imports it on first use: once here, not once per process
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="checks-dist-") as folder:
        procs = [ctx.Process(target=_process, args=(target, model, r, size, batch, steps, folder), daemon=True)
                 for size in sizes for r in range(size)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + TIMEOUT
        for p in procs:
            p.join(max(deadline - time.monotonic(), 0.1))
        hung = [p for p in procs if p.is_alive()]
        for p in hung:
            p.kill()
            p.join()
        results: dict[int, list[RankRun]] = {}
        for size in sizes:
            runs = []
            for r in range(size):
                path = os.path.join(folder, f"rank{size}_{r}.pt")
                if os.path.isfile(path):
                    runs.append(RankRun(**torch.load(path, weights_only=True)))
                else:
                    runs.append(RankRun(r, size, error=f"the process stopped without a result (killed after {TIMEOUT:.0f} s: "
                                                       f"a collective some process never reached?)" if hung else
                                                       "the process stopped without a result"))
            results[size] = runs
    return results


# --- videocoop train's step under torchrun ----------------------------------------------------

_WRAPPED: dict[tuple[int, int], nn.Module] = {}


def videocoop_step(model: nn.Module, features, labels, mask, optimizer, rank: int, world_size: int):
    """One step of ``videocoop train`` in a process of ``world_size``: the model wrapped as the trainer wraps it
    (DistributedDataParallel around TrainStep, the class text sharded over the processes and gathered with
    gradients; the plain model in one process), and ``train_one_epoch`` on this share (each process scales its
    summed loss by the world size over the global batch, the optimiser's step)."""
    from torch.nn.parallel import DistributedDataParallel

    from videocoop.train import TrainStep, train_one_epoch
    from videocoop.utils.distributed import World

    world = World(rank, world_size)
    if world_size == 1:
        step_model = model
    else:
        if (id(model), world_size) not in _WRAPPED:  # wrapped once: DDP's hooks stay on the parameters
            shard = len(model.classnames) >= world_size  # as the trainer decides by default
            _WRAPPED[id(model), world_size] = DistributedDataParallel(TrainStep(model, world, shard),
                                                                      forward_sync_buffers=False)
        step_model = _WRAPPED[id(model), world_size]
    meta = {} if mask is None else {"mask": mask}
    return train_one_epoch(step_model, [(features, labels, meta)], optimizer, "cpu", world=world)
