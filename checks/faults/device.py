"""Device faults (buffer-device-sync, index-device-consistency, host-sync): the layout's
tensors left on the CPU, indices made without a device, reads back to the host."""
from __future__ import annotations

import torch

from videocoop.model import TextEncoder, eot_positions

from ..core import AuditTarget
from .clean import clean, with_encoder


def plain_tokenized_prompts(clip, tok, names) -> AuditTarget:
    """CoOp's original: ``self.tokenized_prompts = tokens``, a plain attribute."""
    target = clean(clip, tok, names)
    pl = target.model.prompt_learner
    tokens = pl._buffers.pop("tokenized_prompts")
    pl.tokenized_prompts = tokens  # not a buffer any more: .to(device) leaves it behind
    return target


class CpuEotEncoder(TextEncoder):
    """Takes the EOT index on the CPU (``.cpu()`` in the encoder)."""

    def pool_states(self, x, eot, prefix=None):
        return super().pool_states(x, eot.cpu(), prefix)


def eot_index_on_cpu(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, CpuEotEncoder)


class ListEotEncoder(TextEncoder):
    """Keeps the EOT positions as a Python list made at construction; the forward indexes
    the device states with ``torch.tensor(list)``, a CPU tensor."""

    eots: list[int] = []

    def pool_states(self, x, eot, prefix=None):
        return super().pool_states(x, torch.tensor(self.eots), prefix)


def eot_list_index(clip, tok, names) -> AuditTarget:
    target = with_encoder(clip, tok, names, ListEotEncoder)
    te, pl = target.model.text_encoder, target.model.prompt_learner
    te.shared_prefix = "off"  # the plain path, which pools with the given indices
    te.eots = eot_positions(pl.tokenized_prompts, te.eot_token_id).tolist()
    return target


class ArangeRowsEncoder(TextEncoder):
    """Builds the row index with ``torch.arange(n)``, no device: a CPU tensor."""

    def pool_states(self, x, eot, prefix=None):  # shared prefix off: x holds every position
        return self.ln_final(x[torch.arange(x.shape[0]), eot])  # [n_cls, width]


def arange_without_device(clip, tok, names) -> AuditTarget:
    target = with_encoder(clip, tok, names, ArangeRowsEncoder)
    target.model.text_encoder.shared_prefix = "off"
    return target


class CpuBiasEncoder(TextEncoder):
    """Adds a bias made in the forward without a device: a CPU tensor in arithmetic with
    device states, which raises on CUDA."""

    def pool_states(self, x, eot, prefix=None):
        return super().pool_states(x, eot, prefix) + torch.zeros(x.shape[-1])


def cpu_bias(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, CpuBiasEncoder)


class ItemLoopEncoder(TextEncoder):
    """The seed's mean pooling: one class at a time, the EOT read back with ``.item()``."""

    def pool_states(self, x, eot):
        x = self.ln_final(x)
        return torch.stack([x[i, : eot[i].item() + 1].mean(0) for i in range(x.shape[0])])  # [n_cls, width]


def item_loop(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, ItemLoopEncoder, text_pool="mean")


class BoolMaskEncoder(TextEncoder):
    """Selects the EOT rows with a boolean mask: right numbers, but the output shape depends
    on the data, so CUDA waits for it (and meta cannot run it)."""

    def pool_states(self, x, eot):
        at_eot = torch.arange(x.shape[1], device=x.device)[None, :] == eot[:, None]  # [n_cls, L]
        return self.ln_final(x[at_eot])  # [n_cls, width]


def bool_mask_pooling(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, BoolMaskEncoder)


class CpuCudaOnlyEncoder(TextEncoder):
    """Refuses any device but cpu and cuda: the meta forward stops before the text path is watched."""

    def forward(self, prompts, tokenized_prompts, **kwargs):
        if prompts.device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"unsupported device {prompts.device.type}")
        return super().forward(prompts, tokenized_prompts, **kwargs)


def meta_refused(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, CpuCudaOnlyEncoder)


class SharedPathCpuCopy(TextEncoder):
    """Right on the plain path; the shared-prefix path sends the prefix states through the CPU."""

    def pool_states(self, x, eot, prefix=None):
        if prefix is not None:
            prefix = prefix.cpu().to(x.device)  # a copy to the host and back, on that path only
        return super().pool_states(x, eot, prefix)


def shared_path_cpu_copy(clip, tok, names) -> AuditTarget:
    """A device bug on the shared-prefix path only (shared_prefix 'auto': the path each device
    takes decides whether it bites there)."""
    return with_encoder(clip, tok, names, SharedPathCpuCopy)
