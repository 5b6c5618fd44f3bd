# Two commands on a fresh machine: `make verify` and `make test`. Both create .venv on
# first use; a second run installs nothing (the stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# torch/torchvision pinned: these lie on this machine's disk; any other version downloads GBs.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

# `make test` and `make test-gpu` also audit our own model inside pytest (the checks plugin:
# one test per audit), on the CPU and on CUDA; --audit-spawn runs the audit that starts processes
# too (distributed-equivalence, about 13 s), as the CI files in examples/ci do.
AUDITS := --audit-target tests.targets:coop_clean --audit-spawn

.PHONY: install verify train demo test fuzz test-gpu gpu-check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Audit the model and data about to be trained; writes reports/verification.md (git-ignored;
## committed examples live in reports/examples/, reports/README.md says how to regenerate them).
verify: $(STAMP)
	$(BIN)/python -m checks $(ARGS)

## Synthetic data with a planted prompt, then the seed's training command on it.
train: $(STAMP)
	$(BIN)/videocoop synth --out data/synth $(SYNTH_ARGS)
	$(BIN)/videocoop train --feature-dir data/synth/train --val-feature-dir data/synth/val \
		--initial-prompts-file data/synth/custom_prompts.json --epochs 20 \
		--output-dir output/synth $(ARGS)

## From video files to predictions, no data needed: synthetic videos -> extract (random
## ViT-B-32) -> verify (extraction-parity included) -> train -> predict on the val videos.
DEMO       := data/demo
DEMO_TRAIN := --epochs 20 --n-ctx 4 --csc --batch-size 16 --lr 0.005
demo: $(STAMP)
	$(BIN)/videocoop synth-videos --out $(DEMO)/videos
	$(BIN)/videocoop extract --videos $(DEMO)/videos --out $(DEMO)/features --clip-model ViT-B-32
	$(BIN)/python -m checks --feature-dir $(DEMO)/features/train --val-feature-dir $(DEMO)/features/val \
		$(DEMO_TRAIN) --report output/demo/verification.md
	$(BIN)/videocoop train --feature-dir $(DEMO)/features/train --val-feature-dir $(DEMO)/features/val \
		$(DEMO_TRAIN) --output-dir output/demo $(ARGS)
	$(BIN)/videocoop predict --run output/demo --videos $(DEMO)/videos/val --out output/demo/predictions.csv

test: $(STAMP)
	$(BIN)/python -m pytest -q $(AUDITS) --audit-device cpu $(ARGS)

## The input fuzz with its large budget (`make test` runs it with a small one): every reader and
## command on damaged files, 500 examples a reader, 50 a command (docs/inputs.md, "The fuzz").
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_fuzz_inputs.py $(ARGS)

## The gpu-marked tests and the audits inside pytest with CUDA as the device, then the
## self-test with the device audits on CUDA (both refused without CUDA: pytest's usage error,
## exit 4, and the self-test's, exit 2).
test-gpu: $(STAMP)
	TORCH_DEVICE=cuda $(BIN)/python -m pytest -q -m "gpu or audit" $(AUDITS) --audit-device cuda $(ARGS)
	$(BIN)/python -m checks --selftest --device cuda

## test-gpu, the audits of the default model on CUDA, the self-test and the GPU benchmark matrix
## in one run under ten minutes on one H100; writes bench/results-gpu.json (docs/ci.md).
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

## Build artefacts, caches and the venv; and the demo targets' own folders (output/synth,
## data/synth, output/demo, data/demo). Never output/ or data/ as a whole: they may hold your
## runs and features.
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis output/synth data/synth output/demo data/demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
