"""The CoOp prompt layout: learned context vectors around each class name.

``[SOS][ctx_1 … ctx_n][CLASS tokens][.][EOT][PAD…]`` for ``class_token_position="end"``;
``middle`` splits the context around the class, ``front`` puts the class first.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..clip.loader import text_tower
from ..utils.errors import VideoCoopError

POSITIONS = ("end", "middle", "front")
# CoOp's placeholder for a context slot: one BPE token whose embedding is replaced by ctx.
_PLACEHOLDER = "X"
# Tokenise this long first so an over-long prompt is measured, not silently cut.
_MEASURE_LENGTH = 1024


def class_words(name: str, split_camel_case: bool = False) -> str:
    """The words a class name contributes to its prompt.

    ``_`` becomes a space; with ``split_camel_case`` "ApplyEyeMakeup" becomes
    "Apply Eye Makeup" (off by default: it would also split acronyms like "YoYo").
    """
    words = name.replace("_", " ")
    if split_camel_case:
        words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", words)
    return " ".join(words.split())


def eot_positions(tokens: torch.Tensor, eot_token_id: int | None) -> torch.Tensor:
    """Index of the first EOT in each row; argmax of the ids when the EOT id is unknown.

    CLIP's EOT (49407) is the largest id, which is why open_clip pools at ``argmax``;
    tokenizers where that is false need the id, so use it whenever we know it.
    """
    if eot_token_id is None:
        return tokens.argmax(dim=-1)
    return (tokens == eot_token_id).int().argmax(dim=-1)


def _tokenize(tokenizer, texts: list[str], context_length: int) -> torch.Tensor:
    return tokenizer(texts, context_length=context_length)


class PromptLearner(nn.Module):
    """Learned context for every class, in the CoOp layout.

    Args:
        classnames: class names in label order (folder names); ``_`` becomes a space.
        clip_model: the frozen open_clip model whose token embedding seeds the layout.
        tokenizer: its tokenizer (``open_clip.get_tokenizer``).
        n_ctx: number of context vectors; ignored when ``ctx_init`` is given.
        ctx_init: initial context. A phrase (e.g. ``"a video of a"``) sets the context to
            its token embeddings and ``n_ctx`` to its token count: BPE tokens, not words
            ("person's" is two tokens). With ``csc`` every class starts from the phrase. A
            mapping class name -> phrase gives per-class initial context and implies
            ``csc``; ``n_ctx`` becomes the longest phrase's token count, a shorter phrase
            fills the slots nearest the class name and the rest start random, as do
            classes the mapping leaves out.
        csc: class-specific context (one set of vectors per class) instead of unified.
        class_token_position: ``end``, ``middle`` or ``front``.
        display_names: folder name -> words used in the prompt ("ApplyEyeMakeup" ->
            "applying eye makeup"); other classes use :func:`class_words`.
        split_camel_case: split CamelCase class names into words.
        truncate: keep only the first ``max(EOT) + 1`` positions. Exact: under the causal
            mask no position at or before an EOT sees anything after it. Ignored (full
            context length) when the text tower has no causal mask.
        ctx_std: standard deviation of random context initialisation (CoOp: 0.02).

    Buffers ``tokenized_prompts`` ``[n_cls, L]`` (the token ids in the real layout, with
    placeholder ids in the context slots), ``token_prefix`` ``[n_cls, 1, width]`` (SOS)
    and ``token_suffix`` ``[n_cls, L - 1 - n_ctx, width]`` (class, ".", EOT, padding) move
    with the module; ``ctx`` is the only parameter.
    """

    def __init__(
        self,
        classnames: Sequence[str],
        clip_model: nn.Module,
        tokenizer,
        n_ctx: int = 16,
        ctx_init: str | Mapping[str, str] | None = None,
        csc: bool = False,
        class_token_position: str = "end",
        *,
        display_names: Mapping[str, str] | None = None,
        split_camel_case: bool = False,
        truncate: bool = True,
        ctx_std: float = 0.02,
    ):
        super().__init__()
        classnames = self._check_classnames(classnames)
        if class_token_position not in POSITIONS:
            raise VideoCoopError(
                f"unknown class_token_position {class_token_position!r}; choose one of {', '.join(POSITIONS)}"
            )
        display_names = dict(display_names or {})
        unknown = sorted(set(display_names) - set(classnames))
        if unknown:
            raise VideoCoopError(f"display names given for unknown classes {unknown}; classes are {classnames}")
        text = text_tower(clip_model)
        token_embedding = text.token_embedding
        context_length = text.positional_embedding.shape[0]
        self.eot_token_id = getattr(tokenizer, "eot_token_id", None)

        # Initial context: phrase token embeddings where given, random elsewhere.
        phrases, csc = self._initial_phrases(ctx_init, classnames, csc)
        phrase_embeds = self._embed_phrases(phrases, tokenizer, token_embedding)
        if phrase_embeds:
            n_ctx = max(e.shape[0] for e in phrase_embeds.values())
        elif int(n_ctx) != n_ctx or n_ctx < 1:
            raise VideoCoopError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        n_ctx = int(n_ctx)
        width = token_embedding.weight.shape[1]
        self.ctx = nn.Parameter(self._initial_context(phrase_embeds, classnames, n_ctx, width, csc, ctx_std))

        # Token layout, built in the "end" order and permuted for middle/front.
        words = [display_names.get(c) or class_words(c, split_camel_case) for c in classnames]
        placeholder = " ".join([_PLACEHOLDER] * n_ctx)
        tokens, eot, dot_apart = self._tokenize_prompts(classnames, words, placeholder, n_ctx, tokenizer,
                                                         context_length)
        name_lens = [int(e) - n_ctx - 1 - d for e, d in zip(eot, dot_apart)]
        has_causal_mask = getattr(text, "attn_mask", None) is not None
        length = int(eot.max()) + 1 if (truncate and has_causal_mask) else context_length
        tokens = tokens[:, :length]  # [n_cls, L]

        index = self._layout_index(class_token_position, n_ctx, name_lens, length)  # [n_cls, L] or None
        with torch.no_grad():
            embedding = token_embedding(tokens.to(token_embedding.weight.device)).float().cpu()  # [n_cls, L, width]
        self.register_buffer("token_prefix", embedding[:, :1, :].clone())  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :].clone())  # class, ".", EOT, padding
        self.register_buffer("tokenized_prompts", tokens if index is None else tokens.gather(1, index))
        self.register_buffer("position_index", index)

        self.classnames = list(classnames)
        self.class_words = words
        self.prompt_texts = [self._layout_text(placeholder, w if d else f"{w}.", class_token_position, n_ctx, d)
                             for w, d in zip(words, dot_apart)]
        self.name_lens = name_lens
        self.eots = [int(e) for e in eot]  # each class's EOT position, known on the host (SharedLayout)
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.csc = csc
        self.class_token_position = class_token_position
        self.context_length = context_length

    @staticmethod
    def _initial_phrases(ctx_init, classnames: list[str], csc: bool) -> tuple[dict[str, str], bool]:
        """``ctx_init`` as ``{class: phrase}`` (``{"": phrase}`` for every class), and ``csc``
        (a mapping implies it)."""
        if isinstance(ctx_init, Mapping):
            per_class = dict(ctx_init.items())
            unknown = sorted(set(per_class) - set(classnames))
            if unknown:
                raise VideoCoopError(f"initial prompts given for unknown classes {unknown}; classes are {classnames}")
            return per_class, True
        if isinstance(ctx_init, str):
            return {"": ctx_init}, csc
        if ctx_init is None:
            return {}, csc
        raise VideoCoopError(f"ctx_init must be a phrase or a mapping class -> phrase, got {type(ctx_init).__name__}")

    @staticmethod
    def _initial_context(phrase_embeds: Mapping[str, torch.Tensor], classnames: list[str], n_ctx: int, width: int,
                         csc: bool, std: float) -> torch.Tensor:
        """Random context (CoOp's normal init), overwritten by each phrase's token embeddings:
        every class's with the shared phrase, a class's last slots (nearest its name) with its own."""
        ctx_shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
        ctx = torch.empty(ctx_shape, dtype=torch.float32).normal_(std=std)  # [n_ctx, width] or [n_cls, n_ctx, width]
        with torch.no_grad():
            if "" in phrase_embeds:
                ctx[..., :, :] = phrase_embeds[""]
            for i, name in enumerate(classnames):
                if name in phrase_embeds:
                    e = phrase_embeds[name]  # [n_tokens, width]
                    ctx[i, n_ctx - e.shape[0]:] = e
        return ctx

    def _tokenize_prompts(self, classnames: list[str], words: list[str], placeholder: str, n_ctx: int, tokenizer,
                          context_length: int) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Each class's prompt in the ``end`` layout, tokenised and measured.

        Returns:
            The tokens ``[n_cls, 1024]``, each class's EOT position ``[n_cls]`` and whether its
            "." is a token of its own.

        Raises:
            VideoCoopError: a class without words, or a prompt longer than the context.
        """
        for c, w in zip(classnames, words):
            if not w.strip():
                raise VideoCoopError(f"class {c!r} has no words to put in its prompt")
        tokens = _tokenize(tokenizer, [f"{placeholder} {w}." for w in words], _MEASURE_LENGTH)  # [n_cls, 1024]
        eot = eot_positions(tokens, self.eot_token_id)  # [n_cls]
        too_long = [(c, int(e) + 1) for c, e in zip(classnames, eot) if int(e) + 1 > context_length]
        if too_long:
            detail = "; ".join(
                f"class {c!r} needs {n} tokens (SOS + {n_ctx} context + {n - n_ctx - 3} class + '.' + EOT)"
                for c, n in too_long
            )
            raise VideoCoopError(
                f"prompt does not fit the context length {context_length}: {detail}. "
                f"Use fewer context tokens or shorter display names; a cut prompt would lose its EOT."
            )
        # The class's tokens: everything between the context and the EOT but a standalone
        # ".". A name ending in punctuation ('hurling (sport)') merges with the "." into one
        # BPE token ('). '), which belongs to the name: front and middle layouts keep it with
        # the name instead of splitting ')' off behind the context (CoOp counts it the same).
        dot = int(_tokenize(tokenizer, ["."], 3)[0, 1])
        dot_apart = [int(tokens[c, int(e) - 1]) == dot for c, e in enumerate(eot)]
        return tokens, eot, dot_apart

    @staticmethod
    def _check_classnames(classnames) -> list[str]:
        if isinstance(classnames, str) or not isinstance(classnames, Sequence):
            raise VideoCoopError(f"classnames must be a list of strings, got {classnames!r}")
        classnames = list(classnames)
        if not classnames:
            raise VideoCoopError("classnames is empty: need at least one class")
        for c in classnames:
            if not isinstance(c, str) or not c.strip():
                raise VideoCoopError(f"empty or non-string class name {c!r} in {classnames}")
        seen, dups = set(), []
        for c in classnames:
            if c in seen:
                dups.append(c)
            seen.add(c)
        if dups:
            raise VideoCoopError(f"duplicate class names {sorted(set(dups))}")
        return classnames

    def _embed_phrases(self, phrases: Mapping[str, str], tokenizer, token_embedding) -> dict[str, torch.Tensor]:
        out = {}
        for key, phrase in phrases.items():
            if not isinstance(phrase, str) or not phrase.strip():
                where = f" for class {key!r}" if key else ""
                raise VideoCoopError(f"empty initial prompt{where}: {phrase!r}")
            phrase = " ".join(phrase.replace("_", " ").split())
            tokens = _tokenize(tokenizer, [phrase], _MEASURE_LENGTH)
            n = int(eot_positions(tokens, self.eot_token_id)[0]) - 1
            with torch.no_grad():
                emb = token_embedding(tokens.to(token_embedding.weight.device)).float().cpu()
            out[key] = emb[0, 1:1 + n, :]  # [n_tokens, width]
        return out

    @staticmethod
    def _layout_index(position: str, n_ctx: int, name_lens: list[int], length: int) -> torch.Tensor | None:
        """Per class, which position of the ``end`` layout goes to each output position."""
        if position == "end":
            return None
        rows = []
        ctx = list(range(1, 1 + n_ctx))
        for k in name_lens:
            cls = list(range(1 + n_ctx, 1 + n_ctx + k))
            rest = list(range(1 + n_ctx + k, length))
            if position == "front":
                order = [0] + cls + ctx + rest
            else:  # middle
                half = n_ctx // 2
                order = [0] + ctx[:half] + cls + ctx[half:] + rest
            rows.append(order)
        return torch.tensor(rows, dtype=torch.long)

    @staticmethod
    def _layout_text(placeholder: str, words: str, position: str, n_ctx: int, dot: bool = True) -> str:
        """The prompt written out; ``dot`` False: ``words`` carry the "." (merged into their last token)."""
        end = "." if dot else ""
        if position == "end":
            return f"{placeholder} {words}{end}"
        if position == "front":
            return f"{words} {placeholder}{end}"
        parts = placeholder.split()
        half = n_ctx // 2
        return " ".join(parts[:half] + [words] + parts[half:]) + end

    @property
    def shared_prefix_len(self) -> int:
        """Leading positions whose tokens are the same for every class (SOS, shared context)."""
        if self.csc:
            return 1
        if self.class_token_position == "end":
            return 1 + self.n_ctx
        if self.class_token_position == "middle":
            return 1 + self.n_ctx // 2
        return 1

    def forward(self) -> torch.Tensor:
        """Prompt embeddings ``[n_cls, L, width]`` in the configured layout."""
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)  # [n_cls, n_ctx, width]
        prompts = torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype), self.token_suffix], dim=1)
        if self.position_index is not None:
            index = self.position_index.unsqueeze(-1).expand(-1, -1, prompts.shape[-1])
            prompts = prompts.gather(1, index)  # [n_cls, L, width]
        return prompts
