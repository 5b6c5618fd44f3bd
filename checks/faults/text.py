"""Text-path faults (text-encoder-parity, causal-mask, eot-collapse, batch-independence,
prompt-tokenization): ports of CoOp's text encoder and prompt learner that compute the wrong
class features, and the honest variants those audits must pass."""
from __future__ import annotations

import torch

from videocoop.model import TextEncoder, eot_positions

from ..core import AuditTarget
from .clean import clean, with_encoder


class PermuteNoMaskEncoder(TextEncoder):
    """CoOp's ``permute(1, 0, 2)`` kept on open_clip's batch-first transformer; the mask
    dropped to silence the resulting shape error."""

    def forward(self, prompts, tokenized_prompts, layout=None):  # a port's two-argument call; the layout unused
        x = (prompts + self.positional_embedding[: prompts.shape[1]]).to(self.dtype)
        x = x.permute(1, 0, 2)  # [L, n_cls, width]: open_clip reads it as batch L, sequence n_cls
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.project(self.ln_final(x[rows, tokenized_prompts.argmax(-1)])).float()


def permute_no_mask(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, PermuteNoMaskEncoder)


class NoMaskEncoder(TextEncoder):
    """The transformer run without CLIP's causal mask."""

    def forward(self, prompts, tokenized_prompts, layout=None):  # a port's two-argument call; the layout unused
        x = self.transformer((prompts + self.positional_embedding[: prompts.shape[1]]).to(self.dtype))  # no attn_mask
        rows = torch.arange(x.shape[0], device=x.device)
        return self.project(self.ln_final(x[rows, tokenized_prompts.argmax(-1)])).float()


def no_causal_mask(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, NoMaskEncoder)


class LastPositionEncoder(TextEncoder):
    """Pools the last position instead of the EOT."""

    def pool_states(self, x, eot):
        return self.ln_final(x[:, -1])


def last_position(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, LastPositionEncoder)


class WrongEotIdEncoder(TextEncoder):
    """Looks the EOT up by an id the prompts never contain: argmax of an all-false mask is 0,
    so every class pools its SOS token."""

    def pool_states(self, x, eot):
        return super().pool_states(x, torch.zeros_like(eot))


def sos_pooling(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, WrongEotIdEncoder)


class FullContextEncoder(TextEncoder):
    """CoOp's ``prompts + self.positional_embedding``: all 77 positions, so the model's own
    (truncated) prompts do not fit: every encode raises."""

    def forward(self, prompts, tokenized_prompts, layout=None):  # a port's two-argument call; the layout unused
        x = self.transformer(prompts + self.positional_embedding, attn_mask=self.attn_mask)  # [n_cls, 77, width]
        return self.project(self.pool_states(x, eot_positions(tokenized_prompts, self.eot_token_id))).float()


def full_context_positions(clip, tok, names) -> AuditTarget:
    return with_encoder(clip, tok, names, FullContextEncoder)


class FixedLengthEncoder(TextEncoder):
    """Correct for the model's own prompt length, which it fixes: longer probe prompts do not fit."""

    length = 0

    def forward(self, prompts, tokenized_prompts, layout=None):  # a port's two-argument call; the layout unused
        n = self.length
        x = self.transformer(prompts + self.positional_embedding[:n], attn_mask=self.attn_mask[:n, :n])  # [n_cls, n, w]
        return self.project(self.pool_states(x, eot_positions(tokenized_prompts, self.eot_token_id))).float()


def fixed_prompt_length(clip, tok, names) -> AuditTarget:
    """Names of one token each: every prompt ends at its EOT, so causal-mask must lengthen them."""
    target = with_encoder(clip, tok, ["jump", "walk", "swim"], FixedLengthEncoder)
    target.model.text_encoder.length = target.model.prompt_learner.tokenized_prompts.shape[1]
    return target


class PrefixOnlySharedEncoder(TextEncoder):
    """A broken fast path: the shared-prefix branch (what model.encode_text runs on the CPU)
    pools only the shared prefix, so every class gets one feature; the plain CoOp call stays right."""

    def pool_states(self, x, eot, prefix=None):
        if prefix is not None:
            return self.ln_final(prefix[-1]).expand(x.shape[0], -1)
        return super().pool_states(x, eot)


def shared_path_prefix_only(clip, tok, names) -> AuditTarget:
    target = with_encoder(clip, tok, names, PrefixOnlySharedEncoder)
    target.model.text_encoder.shared_prefix = "split"  # the fast path on any device
    return target


def truncated_prompts(clip, tok, names) -> AuditTarget:
    """The ids a port with 72 context tokens gets from the tokenizer's silent truncation."""
    target = clean(clip, tok, names, truncate=False)  # all 77 positions, as such a port runs
    pl = target.model.prompt_learner
    pl.tokenized_prompts = tok([" ".join(["X"] * 72) + f" {w}." for w in pl.class_words])  # [n_cls, 77]
    return target


def cut_without_causal_mask(clip, tok, names) -> AuditTarget:
    """Prompts cut to max(EOT) + 1 on a text tower built without a causal mask (pass such a CLIP):
    exact under the mask, wrong here, where the EOT attends to the padding that was dropped."""
    target = clean(clip, tok, names)
    pl = target.model.prompt_learner
    n = max(pl.eots) + 1
    pl.tokenized_prompts = pl.tokenized_prompts[:, :n]  # [n_cls, n]
    pl.token_suffix = pl.token_suffix[:, : n - 1 - pl.n_ctx]
    return target


def coop_front_ids(clip, tok, names) -> AuditTarget:
    """Clean, as a faithful CoOp port is: class at the front in the embeddings, ids tokenized as
    ``"X X X X name."`` (CoOp tokenizes the end layout whatever the position)."""
    target = clean(clip, tok, names, class_token_position="front")
    pl = target.model.prompt_learner
    pl.tokenized_prompts = clean(clip, tok, names).model.prompt_learner.tokenized_prompts  # end-layout ids
    return target


def position_ignored(clip, tok, names) -> AuditTarget:
    """The layout says front, but the forward builds the end layout (the rearrangement skipped)."""
    target = clean(clip, tok, names)
    target.model.prompt_learner.class_token_position = "front"
    return target
