"""temporal-operation: the temporal head computes the operation it declares over the frames."""
from __future__ import annotations

import torch

from .. import contract
from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import frames, probe_videos
from ..locations import locate
from ..models import computes_in, copy_model, preserved_modes

BATCH = 2
#: Frames of the probe when the head takes any count (the data's count when it refuses this many).
PROBE_FRAMES = 8
#: A frame counts as reached when its change is above this share of the largest frame's change. A local
#: operation leaves the frames it does not reach bit-identical (0); measured on the zoo's heads
#: (docs/studies/beyond_one_prompt.txt): reached frames at 9.4e-3 and above of the largest, unreached at exactly 0.
REACH_TOL = 1e-5
#: Permuting the frames of an order-free head permutes its output exactly up to rounding: at most this
#: relative difference in fp32 (measured: <= 7.4e-8; ordered heads >= 1.3e-2), ORDER_HALF_EPS machine epsilons in
#: half precision (the bf16 head: 0).
ORDER_TOL = 1e-4
ORDER_HALF_EPS = 8
#: The random step given to the trainable tensors for the second measurement (a trained head: a residual
#: branch initialised to zero, as ours is, is the identity on its initial weights).
STEP = 0.05

_ORDER_FREE = ("pointwise", "attention-unordered")
_NAMES = {"pointwise": "a pointwise operation", "shift": "a temporal shift of one frame",
          "attention": "attention over the frames", "attention-unordered": "attention over the frames"}


def _name(kind: str) -> str:
    return _NAMES.get(kind) or f"a convolution of width {kind.removeprefix('conv:')} over the frames"


def interleaved(T: int) -> list[int]:
    """A frame order that is no shift or reversal of the original: last, first, second to last, second, ..."""
    out = []
    for i in range((T + 1) // 2):
        out += [T - 1 - i, i] if T - 1 - i != i else [i]
    return out[:T]


def measure(target: AuditTarget, model, x: torch.Tensor, t0: int) -> tuple[list[int], float]:
    """``(frames reached by a signal in frame t0, order error)``: the frames whose output changes when frame
    ``t0`` of the input changes, and how far the output of the frames permuted is from the output permuted."""
    g = torch.Generator().manual_seed(0)
    bump = torch.zeros_like(x)
    bump[:, t0] = torch.randn(x[:, t0].shape, generator=g).to(x.device, x.dtype) * x[:, t0].float().std().to(x.dtype) * 0.1
    with preserved_modes(model), torch.no_grad():
        model.eval()
        y = contract.temporal(target, model, x).float()  # [B, T, D]
        moved = (contract.temporal(target, model, x + bump).float() - y).abs().amax(dim=-1).amax(dim=0)  # [T]
        perm = interleaved(x.shape[1])
        permuted = contract.temporal(target, model, x[:, perm]).float()
    reached = [t for t in range(x.shape[1]) if float(moved[t]) > REACH_TOL * float(moved.max().clamp_min(1e-30))]
    scale = y.abs().amax(dim=(1, 2)).clamp_min(1e-12)  # [B]
    order = float(((permuted - y[:, perm]).abs().amax(dim=(1, 2)) / scale).max())
    return reached, order


def _stepped(model):
    """A copy whose trainable tensors took a seeded random step: the head as training would leave it."""
    stepped = copy_model(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in stepped.parameters():
            if p.requires_grad and p.dtype.is_floating_point:
                p.add_((torch.randn(p.shape, generator=g) * STEP).to(p.device, p.dtype))
    return stepped


@audit(
    "temporal-operation",
    title="The temporal head computes the operation it declares",
    problem="a temporal module that computes something else than its name: x.view(-1, c, t) on [b, t, c] "
            "reinterprets memory instead of transposing, so a 1-D 'temporal' convolution mixes channels and frames; "
            "a temporal transformer whose frame positions are never added ignores the order it is meant to model",
    fix="a signal put into one frame reaches only the frames the declared operation reaches (itself for a pointwise "
        "head, its neighbours for a shift, K // 2 either side for a width-K convolution, any frame for attention), "
        "and permuting the frames permutes the output exactly for an order-free head and not for an ordered one, "
        "on the head's own weights and after a random step of its trainable tensors",
    remediation="move the frames into the convolution's layout with x.transpose(1, 2) (or permute(0, 2, 1)), never "
                "view/reshape; add the learned frame positions before the attention; declare the operation the head "
                "computes (AuditTarget(temporal_kind=...))",
    needs=("temporal",),
)
def temporal_operation(target: AuditTarget) -> Outcome:
    """A signal in the middle frame, and the frames permuted, through the head as is and after a random step."""
    kind = target.temporal_kind
    reach = contract.temporal_reach(kind)
    model = copy_model(target.model)
    T = max(frames(target), PROBE_FRAMES)
    x = probe_videos(target, BATCH, T)
    try:
        with torch.no_grad():
            contract.temporal(target, model, x)
    except Exception:  # noqa: BLE001: a head fixed to the data's frame count
        T = frames(target)
        x = probe_videos(target, BATCH, T)
    t0 = T // 2
    dtype = computes_in(lambda: contract.temporal(target, model, x))
    tol = ORDER_TOL if dtype == torch.float32 else max(ORDER_TOL, ORDER_HALF_EPS * torch.finfo(dtype).eps)
    runs = {"its own weights": measure(target, model, x, t0),
            "a random step of its trainable tensors": measure(target, _stepped(model), x, t0)}
    evidence = [f"declared: {kind} ({contract.TEMPORAL_KINDS.get(kind, contract.TEMPORAL_KINDS['conv:K'])})",
                f"probe: {BATCH} videos of {T} frames; a signal added to frame {t0}; the frames reordered {interleaved(T)}"]
    problems, metrics = [], {"frames": T, "kind": kind, "order_tolerance": tol}
    for how, (reached, order) in runs.items():
        far = max((abs(t - t0) for t in reached), default=0)
        evidence.append(f"{how}: the signal changed frames {reached} (up to {far} away); permuting the frames vs "
                        f"permuting the output: {order:.2e} (relative)")
        key = "stepped" if how.startswith("a random") else "own"
        metrics.update({f"{key}_reach": far, f"{key}_order_error": order})
        if reach is not None and reach >= 0 and far > reach:
            problems.append(f"with {how}, a signal in frame {t0} changed frames {min(reached)}..{max(reached)} (up to "
                            f"{far} away): not {_name(kind)}, which reaches {reach} (frames and channels mixed, e.g. a "
                            f"view or reshape where a transpose belongs)")
        if kind in _ORDER_FREE and order > tol:
            problems.append(f"with {how}, permuting the frames changes the output beyond permuting it ({order:.2e} "
                            f"relative, tolerance {tol:.0e}): the head uses frame positions, which {_name(kind)} "
                            f"declared order-free has none of")
    reached, order = runs["a random step of its trainable tensors"]
    if kind not in _ORDER_FREE and order <= tol:
        problems.append(f"after a random step of its trainable tensors, permuting the frames only permutes the output "
                        f"({order:.2e} relative): the head ignores frame order, which {_name(kind)} uses (frame "
                        f"positions never added?)")
    if kind.startswith("attention") and max((abs(t - t0) for t in reached), default=0) == 0:
        problems.append(f"after a random step of its trainable tensors, a signal in frame {t0} reached no other frame: "
                        f"the attention does not run over the frames (batch_first?)")
    fn = target.temporal if target.temporal is not None else type(getattr(target.model, "temporal", target.model)).forward
    location = locate(fn)
    if problems:
        return Outcome(Status.FAIL, problems[0], metrics, evidence, location)
    return Outcome(Status.PASS, f"{_name(kind)}: a signal in frame {t0} reaches at most "
                   f"{max(metrics['own_reach'], metrics['stepped_reach'])} frame(s) away, and frame order "
                   f"{'changes nothing but the order' if kind in _ORDER_FREE else 'matters'}, on its weights and after "
                   f"a random step", metrics, evidence, location)
