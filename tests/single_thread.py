"""A module fixture running torch on one CPU thread.

Import ``one_thread`` into a test module (it is autouse there). Tiny tensors on a busy
2-core machine: OpenMP's spinning second thread costs up to 100x more than it saves.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
