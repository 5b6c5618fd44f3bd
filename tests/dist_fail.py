"""``python -m torch.distributed.run ... tests/dist_fail.py train ...``: ``videocoop train`` with
one process failing at the start of epoch ``$FAIL_EPOCH`` on rank ``$FAIL_RANK`` (a
planted fault for the tests of a rank that fails)."""
import os
import sys

import videocoop.train.trainer as train_mod
from videocoop.cli import main
from videocoop.utils.errors import VideoCoopError

real = train_mod.train_one_epoch
epochs = {"n": 0}


def failing(*args, **kwargs):
    epochs["n"] += 1
    if epochs["n"] == int(os.environ["FAIL_EPOCH"]) and os.environ["RANK"] == os.environ["FAIL_RANK"]:
        raise VideoCoopError(f"planted failure on rank {os.environ['RANK']}")
    return real(*args, **kwargs)


train_mod.train_one_epoch = failing
sys.exit(main(sys.argv[1:]))
