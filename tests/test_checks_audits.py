"""Every audit: the clean model passes, its planted fault fails with the expected message."""
import warnings

import pytest
import torch

from checks import AuditTarget, Status, faults, list_audits, run_audits
from checks.audits.eot_collapse import SPREAD_RATIO_WARN

# audit id -> (planted fault, expected status, words the finding must contain): checks.faults.PLANTED
PLANTED = faults.PLANTED
#: audits whose clean case has its own target (checks.faults.CLEAN); on the default clean model they SKIP
NEEDS_SOURCES = set(faults.CLEAN)

# More faults the seed report's users met, each caught by the audit named.
MORE = [
    ("index-device-consistency", faults.plain_tokenized_prompts, Status.FAIL, "on the wrong device"),
    ("dataset-unpacking", faults.labels_from_one, Status.FAIL, "labels start at 1"),
    ("text-encoder-parity", faults.last_position, Status.FAIL, "differs from encode_text"),
    ("causal-mask", faults.last_position, Status.FAIL, "changed the pooled feature"),
    ("causal-mask", faults.permute_no_mask, Status.FAIL, "changed the pooled feature"),
    ("eot-collapse", faults.permute_no_mask, Status.FAIL, "classes indistinguishable"),
    ("text-encoder-parity", faults.sos_pooling, Status.FAIL, "differs from encode_text"),
    # a fast path that only model.forward takes: the audits must see what training sees
    ("text-encoder-parity", faults.shared_path_prefix_only, Status.FAIL, "own forward computes other text features"),
    ("eot-collapse", faults.shared_path_prefix_only, Status.FAIL, "classes indistinguishable"),
    ("batch-independence", faults.shared_path_prefix_only, Status.FAIL, ""),
    # a correct but syncing forward: a speed warning, not a device failure (on CUDA the whole
    # path is traced there, so it passes; only meta stops at the data-dependent op)
    ("index-device-consistency", faults.bool_mask_pooling, Status.PASS if torch.cuda.is_available() else Status.WARN,
     "" if torch.cuda.is_available() else "data-dependent shape"),
    ("host-sync", faults.bool_mask_pooling, Status.WARN, "data-dependent shape op at checks/faults/device.py"),
    # CPU index tensors into device states: PyTorch copies them over (CoOp's own arange does
    # this and runs on CUDA), so a speed warning, not a failure
    ("index-device-consistency", faults.eot_list_index, Status.WARN, "CPU index tensor indexes"),
    ("index-device-consistency", faults.arange_without_device, Status.WARN, "CPU index tensor indexes"),
    ("index-device-consistency", faults.cpu_bias, Status.FAIL, "CPU tensor meets"),
    ("host-sync", faults.meta_refused, Status.WARN, "not checked past checks/faults/device.py"),
    # the encoder raises on the model's own prompts: a finding about the model, not a crash of the audit
    ("causal-mask", faults.full_context_positions, Status.FAIL, "the model raised RuntimeError"),
    ("causal-mask", faults.fixed_prompt_length, Status.SKIP, "rejects the probe prompts"),
    ("prompt-tokenization", faults.position_ignored, Status.FAIL, "the layout says 'front'"),
    ("prompt-tokenization", faults.coop_front_ids, Status.PASS, "class tokens at the front"),
    ("gradient-flow", faults.own_clip_copy_trainable, Status.FAIL, "CLIP tensor(s) are trainable"),
    ("checkpoint-roundtrip", faults.checkpoint_misses_buffers, Status.FAIL, "logits differ"),
    ("checkpoint-roundtrip", faults.nothing_trainable, Status.FAIL, "holds no tensor"),
    # the video half
    ("temporal-padding", faults.transformer_mask_ignored, Status.FAIL, "the temporal aggregation counts the padding"),
    # a plain mean over zero-padded frames only rescales the mean, and the model L2-normalises it: harmless
    ("temporal-padding", faults.padding_mask_ignored, Status.PASS, "with the mask change no logits"),
    ("temporal-padding", faults.no_mask_argument, Status.FAIL, "the model takes no mask"),
    # batch statistics in training mode are BatchNorm's design (a WARN); in evaluation they would mix videos
    ("video-batch-independence", faults.batchnorm_video, Status.WARN, "through BatchNorm's batch statistics only"),
    ("class-order", faults.checkpoint_other_classes, Status.FAIL, "the checkpoint's classnames orders the same 5 names"),
    ("logit-scale", faults.scale_exponentiated_twice, Status.FAIL, "stored exponentiated, then exponentiated again"),
    ("logit-scale", faults.scale_without_exp, Status.FAIL, "applied without its exp"),
    ("logit-scale", faults.logit_scale_trainable, Status.FAIL, "model.logit_scale requires grad"),
    ("optimizer-step", faults.fp16_context_sgd, Status.WARN, "trainable tensor(s) in half precision"),
    # a model that raises on its own data: the model's exception, not "the audit crashed"
    (faults.RUNNER_FAULT[0], faults.RUNNER_FAULT[1].make, Status.FAIL, "the model raised RuntimeError"),
    # the extractor's mistakes, each on the same tiny videos; the clean extraction passes
    ("extraction-parity", faults.extraction_clean, Status.PASS, "equal CLIP's own features"),
    ("extraction-parity", faults.imagenet_normalised, Status.FAIL, "stored features differ from CLIP's"),
    ("extraction-parity", faults.stretched_resize, Status.FAIL, "stored features differ from CLIP's"),
    ("extraction-parity", faults.other_tower, Status.FAIL, "stored features differ from CLIP's"),
    ("extraction-parity", faults.next_frames, Status.FAIL, "recorded, the sampling in features.json"),
]


def test_every_audit_has_a_planted_fault():
    assert set(PLANTED) == set(list_audits())


@pytest.fixture(scope="module")
def clean_results(tiny_clip):
    return run_audits(faults.with_data(*tiny_clip, faults.NAMES))


def test_clean_model_passes_every_audit(clean_results):
    assert [r.id for r in clean_results] == list_audits()
    bad = [(r.id, r.status, r.message) for r in clean_results
           if r.status != Status.PASS and not (r.id in NEEDS_SOURCES and r.status == Status.SKIP)]
    assert not bad
    spread = {r.id: r for r in clean_results}["eot-collapse"].metrics["spread_ratio"]
    assert spread >= 2 * SPREAD_RATIO_WARN, spread  # clear of the WARN line (measured 2.08), not at its edge
    for r in clean_results:
        if r.id in NEEDS_SOURCES:
            assert r.message, r.id  # the SKIP says why
            continue
        assert r.metrics and r.evidence and r.location, r.id
        assert ":" in r.location and r.location.split(":")[-1].isdigit(), r.location


@pytest.mark.parametrize("audit_id", list(PLANTED))
def test_planted_fault_is_caught(audit_id, tiny_clip, classnames):
    make, status, words = PLANTED[audit_id]
    (result,) = run_audits(make(*tiny_clip, classnames), [audit_id], spawn=True)
    assert result.status == status, (result.message, result.evidence)
    assert words in result.message


@pytest.mark.parametrize("audit_id,planted", faults.ALSO_PLANTED,
                         ids=[f"{a}-{p.make.__name__}" for a, p in faults.ALSO_PLANTED])
def test_further_planted_faults_are_caught(audit_id, planted, tiny_clip, classnames):
    (result,) = run_audits(planted.make(*tiny_clip, classnames), [audit_id], spawn=True)
    assert result.status == planted.status, (result.message, result.evidence)
    assert planted.words in result.message


@pytest.mark.parametrize("audit_id", list(faults.CLEAN))
def test_clean_cases_of_their_own_pass(audit_id, tiny_clip, classnames):
    (result,) = run_audits(faults.CLEAN[audit_id](*tiny_clip, classnames), [audit_id], spawn=True)
    assert result.status == Status.PASS, (result.message, result.evidence)


@pytest.mark.parametrize("audit_id,make,status,words", MORE, ids=[f"{a}-{m.__name__}" for a, m, _, _ in MORE])
def test_more_faults_are_caught(audit_id, make, status, words, tiny_clip, classnames):
    (result,) = run_audits(make(*tiny_clip, classnames), [audit_id])
    assert result.status == status, (result.message, result.evidence)
    assert words in result.message


@pytest.mark.parametrize("kwargs", [dict(text_pool="mean"), dict(temporal_agg="transformer"),
                                    dict(class_token_position="middle", csc=True), dict(class_token_position="front")])
def test_other_clean_configurations_pass(kwargs, tiny_clip, classnames):
    results = run_audits(faults.clean(*tiny_clip, classnames, **kwargs))
    allowed = {Status.PASS, Status.SKIP} | ({Status.WARN} if kwargs.get("text_pool") == "mean" else set())
    assert {r.id: r.status for r in results if r.status not in allowed} == {}


def test_eot_collapse_compares_poolings(clean_results):
    r = {x.id: x for x in clean_results}["eot-collapse"]
    table = r.extra["table"]
    assert {"eot pooling", "mean pooling"} <= set(table)
    assert r.metrics["pooling"] == "eot"
    # the configured (EOT) features spread wider than mean pooling of the same states
    assert table["model (configured pooling)"]["mean_cos"] < table["mean pooling"]["mean_cos"]
    assert len(r.extra["heatmap"]) == 1 + 5  # legend + one row per class


def test_mean_pooling_parity_is_against_mean_pooled_encode_text(tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames, text_pool="mean"), ["text-encoder-parity"])
    assert r.status == Status.PASS and r.metrics["pooling"] == "mean"


def test_device_trace_reports_where_tensors_went(clean_results):
    r = {x.id: x for x in clean_results}["index-device-consistency"]
    run = r.extra["runs"]["meta"]
    assert any("tokenized_prompts" in m and "meta" in m for m in run["moved"])
    assert any(line.lstrip().startswith("text_encoder(") for line in run["path"])


def test_gradient_flow_takes_a_second_step_for_zero_initialised_modules(tiny_clip, classnames):
    (r,) = run_audits(faults.clean(*tiny_clip, classnames, temporal_agg="transformer"), ["gradient-flow"])
    assert r.status == Status.PASS and r.metrics["steps"] == 2


def test_data_audits_skip_without_data(tiny_clip, classnames):
    results = run_audits(faults.clean(*tiny_clip, classnames), ["dataset-unpacking", "feature-model-match"])
    assert [r.status for r in results] == [Status.SKIP, Status.SKIP]
    assert all(r.message for r in results)


def test_trainer_loop_unpacks_a_batch(tiny_clip, classnames):
    from videocoop import data, train

    target = faults.with_data(*tiny_clip, classnames)
    target.trainer, target.collate_fn = train, data.collate_samples
    (r,) = run_audits(target, ["dataset-unpacking"])
    assert r.status == Status.PASS, r.evidence
    assert any("train_one_epoch" in e for e in r.evidence)


def test_model_that_already_trained_passes_every_audit(tiny_clip):
    """Caches built during a forward (index tensors, plans) must not become plain tensor
    attributes that .to() leaves behind: audit a model after a real optimiser step."""
    target = faults.with_data(*tiny_clip, faults.NAMES)  # the context drawn from faults.SEED
    model = target.model
    ctx = model.prompt_learner.ctx.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    logits = model(torch.randn(2, 3, model.embed_dim, generator=torch.Generator().manual_seed(0)))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    opt.step()
    assert not torch.equal(model.prompt_learner.ctx, ctx)  # it did train
    results = run_audits(target)
    bad = [(r.id, r.status, r.message) for r in results
           if r.status != Status.PASS and not (r.id in NEEDS_SOURCES and r.status == Status.SKIP)]
    assert not bad
    # eot-collapse's spread hangs on the draws (0.35 to 2.02 over 40 unseeded runs): the seeded
    # model sits well clear of the WARN line, not at its edge (measured 1.74 against 0.3)
    ratio = {r.id: r for r in results}["eot-collapse"].metrics["spread_ratio"]
    assert ratio >= 2 * SPREAD_RATIO_WARN, ratio


def test_checkpoint_roundtrip_loads_into_a_rebuilt_model(tiny_clip, classnames):
    """With a factory the fresh model is rebuilt (and the clean model passes); without, a copy, said so."""
    target = faults.clean(*tiny_clip, classnames)
    target.rebuild = lambda: faults.clean(*tiny_clip, classnames).model
    (r,) = run_audits(target, ["checkpoint-roundtrip"])
    assert r.status == Status.PASS and any("rebuilt by the target's factory" in e for e in r.evidence), r.evidence
    buffers_only = faults.checkpoint_misses_buffers(*tiny_clip, classnames)
    buffers_only.rebuild = None  # the copy holds the unsaved statistics: it cannot tell
    (r,) = run_audits(buffers_only, ["checkpoint-roundtrip"])
    assert any("deep copy" in e and "cannot show" in e for e in r.evidence), r.evidence


def test_a_model_with_its_own_frozen_clip_copy_passes_gradient_flow(tiny_clip, classnames):
    target = faults.own_clip_copy_trainable(*tiny_clip, classnames)
    target.model.text_encoder.requires_grad_(False)
    (r,) = run_audits(target, ["gradient-flow"])
    assert r.status == Status.PASS, (r.message, r.evidence)


@pytest.mark.parametrize("audit_id", ["gradient-flow", "checkpoint-roundtrip"])
def test_a_model_that_raises_on_its_own_data_fails_naming_it(audit_id, tiny_clip, classnames):
    """An fp16 port fed float32 features raises in its forward: FAIL with the model's exception,
    the frame in its code and the likely fix; ERROR stays for an audit that crashed."""
    (r,) = run_audits(faults.fp16_text_float_features(*tiny_clip, classnames), [audit_id])
    assert r.status == Status.FAIL, (r.message, r.evidence)
    assert r.message.startswith("the model raised RuntimeError: expected m1 and m2 to have the same dtype")
    assert "at videocoop/model/video_clip.py:" in r.message and "(logits)" in r.message
    assert "likely fix: cast the inputs to the model's dtype" in r.message
    assert r.location.startswith("videocoop/model/video_clip.py:")
    assert any(e.startswith(f"called by the audit at checks/audits/{audit_id.replace('-', '_')}.py:") for e in r.evidence)


def test_audits_leave_the_audited_model_as_they_found_it(tiny_clip, classnames):
    """No audit changes the object it audits: modes (checkpoint-roundtrip used to leave it in
    eval), parameters, buffers (a BatchNorm's running statistics move in a train-mode forward)."""
    clip, tok = tiny_clip
    model = faults.seeded(faults.BatchNormVideo, classnames, clip, tok, n_ctx=4).train()
    target = AuditTarget(model, classnames, clip, tok)
    target.dataset = faults.Features(len(classnames), model.embed_dim)
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run_audits(target)
    assert {n: m.training for n, m in model.named_modules()} == modes
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert not changed


@pytest.mark.parametrize("mode,auto_on_cuda,status", [
    ("split", "off", Status.FAIL),  # pinned: CUDA runs the shared path too
    ("auto", "split", Status.FAIL),  # auto, where CUDA would pick the shared path: meta must trace that one
    ("auto", "off", Status.PASS),  # auto as today: CUDA runs the plain path, where the bug is not
])
def test_device_audits_trace_the_path_the_model_takes_on_cuda(mode, auto_on_cuda, status, tiny_clip, classnames,
                                                              monkeypatch):
    """The meta device stands in for CUDA: a text encoder choosing its path by device runs CUDA's path there."""
    from videocoop.model import text_encoder

    monkeypatch.setitem(text_encoder.SHARED_PREFIX_AUTO, "cuda", auto_on_cuda)
    target = faults.shared_path_cpu_copy(*tiny_clip, classnames)
    target.model.text_encoder.shared_prefix = mode
    (r,) = run_audits(target, ["index-device-consistency"])
    assert r.status == status, (r.message, r.evidence)
    shared = mode == "split" or auto_on_cuda == "split"
    path = "the 'split' shared-prefix path" if shared else "the plain path"
    device = "cuda" if torch.cuda.is_available() else "meta"
    assert any(e.startswith(f"{device}: text_encoder.shared_prefix={mode!r}: on CUDA it runs {path}") for e in r.evidence)
    if status == Status.FAIL:
        assert "copies a tensor to the CPU" in r.message and "checks/faults/device.py" in r.message
    ops = " ".join(r.extra["runs"][device]["path"])
    assert ("matmul" in ops) == shared  # the shared path's functional attention, seen op by op


@pytest.fixture(scope="module")
def variable_length_features(tmp_path_factory):
    """Our own feature folders (FeatureDataset), videos of 3 to 7 frames, from the tiny CLIP."""
    import warnings

    from videocoop.clip import TINY_MODEL
    from videocoop.data import FeatureDataset
    from videocoop.data.synthetic import synthesize

    out = tmp_path_factory.mktemp("synth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synthesize(out, classnames=faults.NAMES, clip_model=TINY_MODEL, train_per_class=2, val_per_class=1,
                   num_frames=3, max_frames=7)
    train = FeatureDataset(out / "train")
    return train, FeatureDataset(out / "val", classnames=train.classnames)


def test_our_feature_dataset_of_variable_length_videos_needs_no_collate_fn(variable_length_features, tiny_clip):
    """A --target handing over our FeatureDataset without collate_fn: the audit uses our collate (it
    said ERROR `stack expects each tensor to be equal size` before), and says so."""
    train, val = variable_length_features
    assert len(set(train.lengths)) > 1
    target = faults.clean(*tiny_clip, faults.NAMES)
    target.dataset, target.val_dataset = train, val
    results = {r.id: r for r in run_audits(target, ["dataset-unpacking", "class-order", "temporal-padding"])}
    r = results["dataset-unpacking"]
    assert r.status == Status.PASS, (r.message, r.evidence)
    assert any("videocoop.data.collate_samples: the dataset yields VideoSample" in e for e in r.evidence)
    assert any("mask" in e for e in r.evidence)  # the padded batch carried its mask to the model
    assert results["class-order"].status == Status.PASS and results["class-order"].metrics["items_checked"] == 15
    assert results["temporal-padding"].status == Status.PASS


def test_variable_length_items_without_a_collate_fn_say_so(tiny_clip, classnames):
    (r,) = run_audits(faults.variable_length_tuples(*tiny_clip, classnames), ["dataset-unpacking"])
    assert r.status == Status.FAIL, (r.message, r.evidence)
    assert "items have 2 to 5 frames: the DataLoader's default collate cannot stack them" in r.message
    assert "AuditTarget(collate_fn=...)" in r.message


def test_extraction_parity_skips_when_the_sources_are_gone(tiny_clip, tmp_path):
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(faults.fault_videos(), videos)
    target = faults.extracted(*tiny_clip, videos=videos)
    shutil.rmtree(videos)
    (r,) = run_audits(target, ["extraction-parity"])
    assert r.status == Status.SKIP and "not reachable" in r.message and str(videos) in r.message


def test_extraction_parity_judges_bf16_towers_by_their_own_line(tiny_clip):
    from checks.audits.extraction_parity import REL_ERR_FAIL_BF16
    from videocoop.clip import TINY_MODEL, load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bf16 = load_clip(TINY_MODEL, seed=0, precision="bf16")[0]
    clean = faults.extracted(bf16, tiny_clip[1], precision="bf16")
    clean.clip_model = tiny_clip[0]
    (r,) = run_audits(clean, ["extraction-parity"])
    assert r.status == Status.PASS and r.metrics["threshold"] == REL_ERR_FAIL_BF16
    assert any("cannot be told from it" in e for e in r.evidence)
    bgr = faults.extracted(bf16, tiny_clip[1], precision="bf16", preprocess=faults.bgr)
    bgr.clip_model = tiny_clip[0]
    (r,) = run_audits(bgr, ["extraction-parity"])
    assert r.status == Status.FAIL
