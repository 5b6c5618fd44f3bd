"""The custom prompts file: validation, and what it feeds PromptLearner."""
import json
from pathlib import Path

import pytest
import torch

from videocoop.data import UCF101
from videocoop.model import PromptLearner, PromptsFile
from videocoop.utils.errors import VideoCoopError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_prompts_example.json"


def _file(tmp_path, data):
    path = tmp_path / "prompts.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_load_round_trip(tmp_path):
    data = {"default_prompt": "a video of a person", "class_prompts": {"jump": "a video of a"},
            "display_names": {"brush_hair": "brushing hair"}, "description": "x"}
    pf = PromptsFile.load(_file(tmp_path, data))
    assert pf.default_prompt == "a video of a person" and pf.csc
    assert PromptsFile.from_dict(pf.to_dict()) == PromptsFile.from_dict(data)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"default": "a photo"}, r"unknown key\(s\) \['default'\].*valid keys: default_prompt, class_prompts, display_names"),
        ({"default_prompt": ""}, "non-empty string"),
        ({"default_prompt": 3}, "non-empty string"),
        ({"class_prompts": ["a"]}, "must be an object class -> text"),
        ({"display_names": {"jump": None}}, r"display_names\['jump'\]"),
        ({"description": 1}, "'description'.*must be a string"),
        ([1, 2], "JSON object"),
        ("{not json", "not valid JSON: Expecting property name"),
    ],
)
def test_invalid_files_are_refused(tmp_path, data, match):
    with pytest.raises(VideoCoopError, match=match):
        PromptsFile.load(_file(tmp_path, data))


def test_missing_file(tmp_path):
    with pytest.raises(VideoCoopError, match="nope.json: no such file"):
        PromptsFile.load(tmp_path / "nope.json")


def test_classes_absent_from_the_data(classnames):
    pf = PromptsFile.from_dict({"class_prompts": {"jump": "a", "Fly": "b"}})
    with pytest.raises(VideoCoopError, match=r"absent from the data in 'class_prompts': \['Fly'\]"):
        pf.prompt_kwargs(classnames)
    pf = PromptsFile.from_dict({"display_names": {"Swim": "swimming"}})
    with pytest.raises(VideoCoopError, match=r"'display_names': \['Swim'\]"):
        pf.check_classes(classnames)


def test_default_phrase_initialises_the_shared_context(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    pf = PromptsFile.from_dict({"default_prompt": "a video of a person", "display_names": {"jump": "jumping high"}})
    learner = PromptLearner(classnames, clip_model, tokenizer, **pf.prompt_kwargs(classnames))
    reference = PromptLearner(classnames, clip_model, tokenizer, ctx_init="a video of a person")
    assert not learner.csc and learner.n_ctx == 5
    assert torch.equal(learner.ctx, reference.ctx)
    assert learner.class_words[classnames.index("jump")] == "jumping high"


def test_class_phrases_imply_csc_and_fall_back_to_the_default(tiny_clip, classnames):
    clip_model, tokenizer = tiny_clip
    pf = PromptsFile.from_dict({"default_prompt": "a video of a", "class_prompts": {"jump": "a photo of a"}})
    kwargs = pf.prompt_kwargs(classnames)
    assert kwargs["ctx_init"] == {c: ("a photo of a" if c == "jump" else "a video of a") for c in classnames}
    learner = PromptLearner(classnames, clip_model, tokenizer, **kwargs)
    assert learner.csc and learner.ctx.shape[:2] == (len(classnames), 4)
    j, other = classnames.index("jump"), classnames.index("ride_bike")
    assert not torch.equal(learner.ctx[j], learner.ctx[other])
    shared = PromptLearner(classnames, clip_model, tokenizer, ctx_init="a video of a")
    assert torch.equal(learner.ctx[other], shared.ctx)


def test_shipped_example_covers_ucf101(tiny_clip):
    pf = PromptsFile.load(EXAMPLE)
    pf.check_classes(UCF101)
    assert set(pf.display_names) == set(UCF101) and pf.default_prompt
    clip_model, tokenizer = tiny_clip
    learner = PromptLearner(UCF101, clip_model, tokenizer, **pf.prompt_kwargs(UCF101))
    assert learner.csc and learner.class_words[0] == "applying eye makeup"
