"""The thresholds of issue 23's audits, measured: what clean models and planted faults give on each quantity
the audits judge, and which other audits FAIL each planted fault of the zoo.

Run from the repository root: ``python docs/studies/beyond_one_prompt.py`` (about a minute on two CPU cores; the
tiny random-weight CLIP); ``--vit`` adds our default model (random ViT-B-32, the 101 UCF101 names) to the
class-list rows and a ViT-B-32 text tower to the precision rows (about two minutes more). The output of a ``--vit`` run is kept beside this script in
``beyond_one_prompt.txt`` (2-core AMD EPYC development machine, one torch thread); docs/audits.md reads it.
"""
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # docs/studies/ -> the repository root
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
warnings.simplefilter("ignore")

from checks import Status, faults, list_audits, run_audits  # noqa: E402
from checks.audits import class_list_response, optimizer_step, temperature, temporal_operation  # noqa: E402
from checks.faults import NAMES, tiny_clip, zoo  # noqa: E402


def result(target, audit_id):
    (r,) = run_audits(target, [audit_id])
    return r


def row(*cells):
    print("  ".join(str(c) for c in cells))


def class_lists(clip, tok, extra):
    print(f"\n## class-list-response: the same classes' logits in a subset vs among all (relative to the row's "
          f"largest logit); FAIL above {class_list_response.FP32_LIST_TOL:g} (fp32)")
    cases = [("zoo video-text", zoo.xclip.xclip), ("zoo context-free", zoo.context_free.context_free),
             ("our model, unified context", faults.class_list_clean)] + extra
    for name, make in cases:
        r = result(make(clip, tok, NAMES), "class-list-response")
        row(f"  clean {name}:", r.status.value.upper(), f"{r.metrics.get('max_rel_diff', float('nan')):.1e}")
    for name, make in [("zoo template-ensemble (probabilities: order only)", zoo.ensemble.template_ensemble),
                       ("zoo template-finetune (probabilities: order only)", zoo.template_finetune.template_finetune)]:
        r = result(make(clip, tok, NAMES), "class-list-response")
        row(f"  clean {name}:", r.status.value.upper(), f"{r.metrics.get('max_rel_diff', float('nan')):.1e}")
    from test_checks_state import OldOrder  # a list taken in the old order (tests/)

    for name, make in [("stale cache (xclip)", zoo.xclip.xclip_stale_class_list),
                       ("weights at construction", zoo.context_free.context_free_stale_weights),
                       ("stale cache (ours)", faults.text_cache_stale_classes),
                       ("the old order kept", lambda c, t, n: zoo.context_free._target(OldOrder, c, t, n))]:
        r = result(make(clip, tok, NAMES), "class-list-response")
        row(f"  fault {name}:", r.status.value.upper(), f"{r.metrics.get('max_rel_diff', float('nan')):.1e}",
            r.message[:110])


def temporal_heads(clip, tok):
    print(f"\n## temporal-operation: a signal in the middle frame (reach = frames away it changed; the smallest "
          f"reached change / the largest; the largest unreached / the largest) and the order error; a frame counts "
          f"as reached above {temporal_operation.REACH_TOL:g} of the largest change, order-free within "
          f"{temporal_operation.ORDER_TOL:g} (fp32)")
    from checks.contract import temporal_reach
    from checks.inputs import frames, probe_videos
    from checks.models import copy_model

    cases = [("conv:3 (ensemble, clean)", zoo.ensemble.template_ensemble),
             ("conv:3 through view (ensemble, fault)", zoo.ensemble.template_ensemble_view),
             ("shift (context-free)", zoo.context_free.context_free),
             ("attention (video-text)", zoo.xclip.xclip), ("attention (prefix-postfix)", zoo.prefix_postfix.prefix_postfix),
             ("attention-unordered bf16 (bf16-head)", zoo.heads.bf16_head),
             ("attention (ours, trained)", faults.temporal_clean),
             ("attention, positions dropped (ours, fault)", faults.temporal_positions_dropped)]
    for name, make in cases:
        target = make(clip, tok, NAMES)
        model = copy_model(target.model)
        T = frames(target) if target.frames else max(frames(target), temporal_operation.PROBE_FRAMES)
        x = probe_videos(target, 2, T)
        t0 = T // 2
        for how, m in (("own", model), ("stepped", temporal_operation._stepped(model))):
            g = torch.Generator().manual_seed(0)
            bump = torch.zeros_like(x)
            bump[:, t0] = torch.randn(x[:, t0].shape, generator=g) * x[:, t0].std() * 0.1
            with torch.no_grad():
                m.eval()
                from checks import contract

                moved = (contract.temporal(target, m, x + bump).float() - contract.temporal(target, m, x).float())
                moved = moved.abs().amax(dim=-1).amax(dim=0)  # [T]
            reach = temporal_reach(target.temporal_kind)
            near = [t for t in range(T) if reach < 0 or abs(t - t0) <= reach]
            far = [t for t in range(T) if t not in near]
            top = float(moved.max())
            reached = [float(moved[t]) / top for t in near if float(moved[t]) > 0]
            unreached = max((float(moved[t]) / top for t in far), default=0.0)
            _, order = temporal_operation.measure(target, m, x, t0)
            row(f"  {name} [{how}]:", f"smallest reached {min(reached):.1e}", f"largest beyond the declared reach "
                f"{unreached:.1e}", f"order error {order:.1e}")
        r = result(make(clip, tok, NAMES), "temporal-operation")
        row("    verdict:", r.status.value.upper(), r.message[:110])


def precision(clip, tok, extra):
    print(f"\n## optimizer-step: share of the values the optimiser updates (in fp32, same gradients) left at their "
          f"old value by step 1; FAIL above {optimizer_step.LOST_SHARE_FAIL:g} through a declared step")
    from test_checks_beyond import masters_optimizer, masters_step

    def masters(c, t, n):
        target = zoo.template_finetune.template_finetune_fp16(c, t, n)
        target.train_step, target.make_optimizer = masters_step, masters_optimizer
        return target

    cases = [("fp32 weights (template-finetune)", zoo.template_finetune.template_finetune),
             ("fp16 weights, fp32 master weights", masters),
             ("fp16 weights rounded back after the step (fault)", zoo.template_finetune.template_finetune_fp16),
             ("bf16 temporal head, no declared step", zoo.heads.bf16_head)] + extra
    for name, make in cases:
        r = result(make(clip, tok, NAMES), "optimizer-step")
        row(f"  {name}:", r.status.value.upper(), f"lost {r.metrics.get('lost_share', 0.0):.3f} of "
            f"{r.metrics.get('updated_values', '-')} values")


def temperatures(clip, tok):
    print(f"\n## temperature: the outputs' move when exp(logit_scale) halves (relative), and the training/evaluation "
          f"ratio where both are logits computed the same way; same scale within {temperature.SAME_SCALE_TOL:g}")
    cases = [("ours (frozen scale)", faults.with_data), ("ours, fixed eval scale (fault)", faults.fixed_eval_temperature),
             ("template-finetune", zoo.template_finetune.template_finetune),
             ("template-finetune, fixed eval (fault)", zoo.template_finetune.template_finetune_fixed_eval_scale),
             ("template-ensemble", zoo.ensemble.template_ensemble), ("cocoop", zoo.cocoop.cocoop),
             ("kgcoop", zoo.kgcoop.kgcoop)]
    for name, make in cases:
        r = result(make(clip, tok, NAMES), "temperature")
        m = r.metrics
        row(f"  {name}:", r.status.value.upper(), f"eval moved {m.get('eval_moved', float('nan')):.2e}",
            f"train moved {m.get('train_moved', float('nan')):.2e}", f"train/eval {m.get('train_over_eval', float('nan')):.6g}",
            f"residual {m.get('residual', float('nan')):.1e}")


def cross(clip, tok):
    print("\n## every audit on every planted fault of the zoo: the FAILs other than the audit that names it")
    for family in zoo.FAMILIES:
        for fault in family.faults:
            others = [f"{r.id}: {r.message[:90]}" for r in run_audits(fault.make(clip, tok, NAMES))
                      if r.status == Status.FAIL and r.id != fault.audit]
            row(f"  {family.name} / {fault.make.__name__} ({fault.audit}):", "none" if not others else "")
            for o in others:
                row("     ", o)


def vit_cases():
    """Random ViT-B-32: our default model (the 101 UCF101 names) for the class-list rows, and the template-finetune
    fault's text tower for the precision row (the issue's 0.42 was measured on such a tower)."""
    from checks.classes import rebuilt_for_classes
    from checks.core import AuditTarget
    from videocoop.clip import load_clip
    from videocoop.data import UCF101
    from videocoop.model import VideoFeatureCLIP

    vit, vtok = load_clip("ViT-B-32", seed=0)

    def ours(c, t, n, **kw):
        model = faults.seeded(VideoFeatureCLIP, UCF101, vit, vtok, **kw)
        build = rebuilt_for_classes(lambda names: VideoFeatureCLIP(names, vit, vtok, **kw), UCF101)
        return AuditTarget(model, UCF101, vit, vtok, for_classes=build)

    return ([("our model, ViT-B-32, 101 classes", ours),
             ("our model, ViT-B-32, 101 classes, class-specific context", lambda c, t, n: ours(c, t, n, csc=True))],
            [("fp16 weights rounded back after the step, random ViT-B-32 text tower (fault)",
              lambda c, t, n: zoo.template_finetune.template_finetune_fp16(vit, vtok, n))])


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    clip, tok = tiny_clip()
    vit_lists, vit_precision = vit_cases() if "--vit" in sys.argv else ([], [])
    print(f"# issue 23's thresholds, measured (torch {torch.__version__}, tiny random-weight CLIP unless said; "
          f"{len(list_audits())} audits)")
    class_lists(clip, tok, vit_lists)
    temporal_heads(clip, tok)
    precision(clip, tok, vit_precision)
    temperatures(clip, tok)
    cross(clip, tok)
    print(f"\n({time.perf_counter() - start:.0f} s)")
