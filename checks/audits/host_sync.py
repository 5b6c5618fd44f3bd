"""host-sync: the forward never waits for the device to hand a value to Python."""
from __future__ import annotations

import warnings

import torch

from .. import contract
from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import probe_batch
from ..models import copy_model, handed_over
from ..text import text_location
from ..trace import foreign_run


@audit(
    "host-sync",
    title="No host-device sync in the forward",
    problem="a per-class .item() loop (the seed's mean pooling) or .cpu()/.tolist() stalls the GPU once per "
            "class per step: correct, but slow",
    fix="pooling is vectorised over classes with the indices on the device",
    remediation="replace Python loops over .item() values by tensor ops (gather, a mask of positions "
                "<= EOT); keep index tensors on the device",
    correctness=False,
    needs=("forward",),
)
def host_sync(target: AuditTarget) -> Outcome:
    """Forward on meta, recording every host read; on CUDA also torch.cuda.set_sync_debug_mode."""
    run = foreign_run(target, torch.device("meta"))
    events = run.host.events
    evidence = [f"meta forward: {len(events)} host read(s)/copies recorded" + (f"; raised {run.error}" if run.error else "")]
    if run.host.answered:
        evidence.append(f"{run.host.answered} host read(s) on meta answered with the values the forward on the model's "
                        f"own device read, so the forward went on as it does there")
    sites: dict[str, int] = {}
    for e in events:
        sites[f"{e.op} at {e.site}"] = sites.get(f"{e.op} at {e.site}", 0) + 1
    evidence += [f"{k} x{v}" for k, v in sites.items()]
    metrics = {"meta_host_reads": len(events), "distinct_sites": len(sites)}
    if run.data_dependent:
        sites[f"data-dependent shape op at {run.error_site}"] = 1
        evidence.append(f"the meta forward stopped at an op whose output shape depends on the data "
                        f"({run.error}) at {run.error_site}: it waits for the device on CUDA")
    if torch.cuda.is_available():
        model = copy_model(handed_over(target)).cuda().eval()
        x = probe_batch(target, 2, device="cuda")[0]
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.cuda.synchronize()
            old = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                contract.logits(target, model, x)
            finally:
                torch.cuda.set_sync_debug_mode(old)
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        metrics["cuda_syncs"] = len(syncs)
        evidence.append(f"cuda forward under set_sync_debug_mode('warn'): {len(syncs)} synchronizing call(s)")
    location = text_location(target)
    if events:
        location = events[0].site.split(" ")[0]
    if events or run.data_dependent or metrics.get("cuda_syncs"):
        first = next(iter(sites), "see evidence")
        if not events and run.error_site:
            location = run.error_site.split(" ")[0]
        return Outcome(Status.WARN, f"{max(len(events), len(sites), metrics.get('cuda_syncs', 0))} host-device "
                       f"sync(s) per forward, first: {first}", metrics, evidence, location)
    if run.error:  # the path after the crash was never watched: no claim about it
        return Outcome(Status.WARN, f"not checked past {run.error_site or 'the crash'}: the meta forward raised "
                       f"{run.error} (see index-device-consistency); no host read before it", metrics, evidence,
                       run.error_site.split(" ")[0] if run.error_site else location)
    return Outcome(Status.PASS, "the forward makes no host read (it ran on meta, where any would show)",
                   metrics, evidence, location)
