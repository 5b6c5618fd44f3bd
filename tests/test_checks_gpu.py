"""The device audits on CUDA (run by `make test-gpu`; skipped without CUDA)."""
import pytest

from checks import Status, faults, list_audits, run_audits

pytestmark = pytest.mark.gpu
DEVICE_AUDITS = ["buffer-device-sync", "index-device-consistency", "host-sync"]


def test_clean_model_on_cuda(tiny_clip, classnames):
    results = run_audits(faults.clean(*tiny_clip, classnames), DEVICE_AUDITS)
    assert [r.status for r in results] == [Status.PASS] * 3, [r.message for r in results]
    index, host = results[1], results[2]
    assert set(index.extra["runs"]) == {"cuda", "meta"}
    assert index.metrics["cuda_tensors_checked"] > 0 and host.metrics["cuda_syncs"] == 0


@pytest.mark.parametrize("make,audit_id,status,words", [
    (faults.plain_tokenized_prompts, "index-device-consistency", Status.FAIL, "on the wrong device"),
    (faults.plain_tokenized_prompts, "buffer-device-sync", Status.FAIL, "on cpu"),
    (faults.eot_index_on_cpu, "index-device-consistency", Status.FAIL, "copies a tensor to the CPU on cuda"),
    (faults.item_loop, "host-sync", Status.WARN, "Tensor.item()"),
])
def test_faults_on_cuda(make, audit_id, status, words, tiny_clip, classnames):
    (r,) = run_audits(make(*tiny_clip, classnames), [audit_id])
    assert r.status == status and words in r.message + " ".join(r.evidence), (r.message, r.evidence)


def test_item_loop_syncs_on_cuda(tiny_clip, classnames):
    (r,) = run_audits(faults.item_loop(*tiny_clip, classnames), ["host-sync"])
    assert r.metrics["cuda_syncs"] >= 1


def test_selftest_on_cuda(capsys):
    """`make test-gpu` also runs `python -m checks --selftest --device cuda`; here it is held to its verdicts."""
    from checks.cli import main

    assert main(["--selftest", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    # every audit's planted fault, the further ones (ALSO_PLANTED) and the runner's own, as the CPU self-test counts
    n = len(list_audits()) + len(faults.ALSO_PLANTED) + 1
    assert "device audits on CUDA" in out and f"OK: {n} of {n} planted faults caught" in out


def test_a_model_on_cuda_gets_the_cpu_verdicts(tiny_clip, classnames):
    """A training script hands the suite its model on CUDA: it is audited there (inputs built on CUDA) and
    gets the verdicts of the same model on the CPU (issue 19: 6 FAILs and 1 ERROR before)."""
    import dataclasses

    from checks.faults.zoo import layouts

    on_cuda = layouts.on_accelerator(*tiny_clip, classnames)
    assert next(on_cuda.model.parameters()).device.type == "cuda"
    on_cpu = dataclasses.replace(on_cuda, model=on_cuda.rebuild(), cache={})
    there, here = run_audits(on_cuda), run_audits(on_cpu)
    assert [(r.id, r.status) for r in there] == [(r.id, r.status) for r in here], [(r.id, r.message) for r in there]


def test_the_foreign_zoo_on_cuda(tiny_clip, classnames):
    from checks import zoo

    runs = zoo.run_zoo(*tiny_clip, classnames)
    assert zoo.ok(runs), zoo.format_zoo(runs)
