"""An inference-only BERT encoder in plain torch, for the prediction cold start.

Importing ``transformers.models.bert.modeling_bert`` (transformers 5) pulls in
``modeling_utils``, ``torch.distributed.tensor``, ``torch._dynamo``, scipy and sympy: 3-7 s on a
busy 2-core machine, more than everything else the ``complex-ner predict`` path does. This module
mirrors transformers' ``BertModel`` (absolute positions, SDPA attention, no pooler) op for op, so
its outputs are bit-identical (``tests/unit/test_lean_load.py``), and reads the same
``config.json`` and ``model.safetensors`` under the same parameter names.

Only plain encoder-only BERT checkpoints qualify (:func:`load_lite_encoder` returns None for
anything else, and the caller falls back to transformers); training always uses transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LiteBertConfig", "LiteBertModel", "LiteOutput", "load_lite_encoder"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}  # what transformers' ACT2FN maps these names to
# Buffers transformers does not persist, but older releases did write into checkpoints.
_IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


@dataclass(frozen=True)
class LiteBertConfig:
    """The fields of a BERT ``config.json`` the encoder needs; ``raw`` is the whole file."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int | None
    raw: dict[str, Any]

    @classmethod
    def supported(cls, raw: dict[str, Any]) -> LiteBertConfig | None:
        """The config if this module reproduces the model exactly, else None."""
        plain = (
            raw.get("model_type") == "bert"
            and raw.get("position_embedding_type", "absolute") == "absolute"
            and raw.get("hidden_act", "gelu") in _ACTIVATIONS
            and not raw.get("is_decoder", False)
            and not raw.get("add_cross_attention", False)
            and not raw.get("chunk_size_feed_forward", 0)
            and raw.get("dtype", raw.get("torch_dtype", "float32")) in ("float32", None)
            # transformers' default is SDPA; an explicit other choice is left to transformers.
            and raw.get("_attn_implementation", raw.get("attn_implementation")) in (None, "sdpa")
        )
        if not plain:
            return None
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        if hidden % heads:
            return None
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            intermediate_size=int(raw["intermediate_size"]),
            hidden_act=str(raw.get("hidden_act", "gelu")),
            hidden_dropout_prob=float(raw.get("hidden_dropout_prob", 0.1)),
            attention_probs_dropout_prob=float(raw.get("attention_probs_dropout_prob", 0.1)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            pad_token_id=raw.get("pad_token_id", 0),
            raw=raw,
        )


class _Linear(nn.Linear):
    """``nn.Linear`` that skips random initialisation: every weight is loaded afterwards.

    (Building under ``torch.device("meta")`` instead would import ``torch._dynamo``, 3 s, through
    the meta kernels of the initialisers.)
    """

    def reset_parameters(self) -> None:
        pass


class _Embedding(nn.Embedding):
    """``nn.Embedding`` without random initialisation (a 250k-row table takes ~0.5 s)."""

    def reset_parameters(self) -> None:
        pass


@dataclass
class LiteOutput:
    """What :class:`complex_ner.domain.models.tagger.Tagger` reads of an encoder's output."""

    last_hidden_state: Tensor


class _Embeddings(nn.Module):
    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = _Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = _Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = _Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        positions = torch.arange(config.max_position_embeddings).expand((1, -1))
        self.register_buffer("position_ids", positions, persistent=False)

    def forward(self, input_ids: Tensor) -> Tensor:
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        token_type_ids = torch.zeros_like(input_ids)  # one segment, as transformers' buffer
        # Same additions in the same order as transformers' BertEmbeddings.
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class _SelfAttention(nn.Module):
    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.head_size = h // config.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.query = _Linear(h, h)
        self.key = _Linear(h, h)
        self.value = _Linear(h, h)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        shape = (*hidden.shape[:-1], -1, self.head_size)
        # shape: (batch, heads, pieces, head_size)
        query = self.query(hidden).view(*shape).transpose(1, 2)
        key = self.key(hidden).view(*shape).transpose(1, 2)
        value = self.value(hidden).view(*shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=self.dropout.p if self.training else 0.0,
            scale=self.scaling,
            is_causal=False,
        )
        # shape: (batch, pieces, heads, head_size)
        out = out.transpose(1, 2).contiguous()
        return out.reshape(*hidden.shape[:-1], -1).contiguous()


class _AddNorm(nn.Module):
    """Dense, dropout, residual, LayerNorm (BertSelfOutput / BertOutput)."""

    def __init__(self, config: LiteBertConfig, width: int) -> None:
        super().__init__()
        self.dense = _Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _Attention(nn.Module):
    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _AddNorm(config, config.hidden_size)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(hidden, mask), hidden)


class _Intermediate(nn.Module):
    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        self.dense = _Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: Tensor) -> Tensor:
        return self.act(self.dense(hidden))


class _Layer(nn.Module):
    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _AddNorm(config, config.intermediate_size)

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class LiteBertModel(nn.Module):
    """``BertModel(add_pooling_layer=False)`` for inference: same parameters, same outputs."""

    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> LiteOutput:
        """Last hidden states of ``input_ids`` (``(batch, pieces)``), padding masked out."""
        hidden = self.embeddings(input_ids)
        return LiteOutput(self.encoder(hidden, _sdpa_mask(attention_mask, hidden.size(1))))

    def save_pretrained(self, folder: str | Path, safe_serialization: bool = True) -> None:
        """Write ``config.json`` and ``model.safetensors`` the way transformers reads them."""
        from safetensors.torch import save_file

        if not safe_serialization:
            raise ValueError("only safetensors weights are written")
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        (target / CONFIG_FILE).write_text(
            json.dumps(self.config.raw, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(target / WEIGHTS_FILE), metadata={"format": "pt"})


def _sdpa_mask(attention_mask: Tensor | None, length: int) -> Tensor | None:
    """The mask transformers' ``create_bidirectional_mask`` hands SDPA.

    None without padding (so SDPA may pick its fastest kernel), else a contiguous boolean
    ``(batch, 1, pieces, pieces)`` mask, True where a key may be attended to.
    """
    if attention_mask is None:
        return None
    padding = attention_mask.bool()
    if bool(padding.all()):
        return None
    rows = torch.ones((1, 1, length, 1), dtype=torch.bool, device=padding.device)
    return rows & padding[:, None, None, :]


def load_lite_encoder(folder: str | Path) -> LiteBertModel | None:
    """The encoder of ``folder`` as a :class:`LiteBertModel`, or None when it does not qualify.

    None (use transformers) when the folder lacks ``config.json`` or ``model.safetensors``, the
    config is not a plain float32 BERT, or the weights do not match the parameters one to one.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        return None
    config = LiteBertConfig.supported(
        json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    )
    if config is None:
        return None
    state = load_file(str(folder / WEIGHTS_FILE))
    # transformers drops these too when it loads a BertModel without a pooler.
    state = {
        k: v for k, v in state.items() if not k.startswith("pooler.") and k not in _IGNORED_KEYS
    }
    model = LiteBertModel(config)  # uninitialised (torch.empty) until the weights are assigned
    expected = dict(model.state_dict())
    if set(state) != set(expected) or any(
        state[k].shape != expected[k].shape or state[k].dtype != torch.float32 for k in state
    ):
        return None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
