"""Tests of the tagging heads and the head registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from complex_ner.core.bio import parse_tag
from complex_ner.core.config import ARCHITECTURES, HeadConfig
from complex_ner.domain.models.heads import (
    HEADS,
    BiLSTMCRFHead,
    CRFHead,
    Head,
    LinearHead,
    build_head,
)

TAGS = [
    "O",
    *(
        f"{prefix}-{entity}"
        for entity in ("PER", "LOC", "GRP", "CORP", "PROD", "CW")
        for prefix in "BI"
    ),
]
SMALL_TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]
HIDDEN = 16


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # Tiny tensors: intra-op threads only add sync overhead, badly so on a shared busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def is_valid_bio(path: list[int], tags: list[str]) -> bool:
    previous_type: str | None = None
    for tag_id in path:
        prefix, entity_type = parse_tag(tags[tag_id])
        if prefix == "I" and entity_type != previous_type:
            return False
        previous_type = entity_type
    return True


def make_head(name: str, dropout: float = 0.1) -> Head:
    return build_head(name, HIDDEN, TAGS, HeadConfig(dropout=dropout, lstm_hidden=8, fc_hidden=32))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(4, 7, HIDDEN, generator=generator)
    lengths = torch.tensor([7, 5, 1, 3])
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    return features, mask


def test_every_architecture_builds_its_head() -> None:
    assert set(HEADS) == set(ARCHITECTURES)
    assert isinstance(make_head("bert_crf"), CRFHead)
    bilstm = make_head("bert_bilstm_crf")
    assert isinstance(bilstm, BiLSTMCRFHead) and bilstm.lstm.hidden_size == 8
    linear = make_head("bert_linear")
    assert isinstance(linear, LinearHead) and linear.fc1.out_features == 32
    unconstrained = build_head("bert_crf", HIDDEN, TAGS, HeadConfig(), constrain=False)
    assert unconstrained.crf.constrain is False


def test_unknown_head() -> None:
    with pytest.raises(ValueError) as info:
        build_head("bert_gru", HIDDEN, TAGS, HeadConfig())
    assert str(info.value) == (
        "unknown head 'bert_gru'; expected one of bert_bilstm_crf, bert_crf, bert_linear"
    )


def test_sizes_and_dropout_come_from_the_config() -> None:
    config = HeadConfig(dropout=0.3, lstm_hidden=6, fc_hidden=10)
    bilstm = build_head("bert_bilstm_crf", HIDDEN, TAGS, config)
    assert bilstm.lstm.hidden_size == 6 and bilstm.emission.in_features == 12
    assert bilstm.dropout.p == 0.3
    linear = build_head("bert_linear", HIDDEN, TAGS, config)
    assert linear.fc1.out_features == 10 and linear.fc2.out_features == len(TAGS)
    assert linear.dropout.p == 0.3


@pytest.mark.parametrize("name", sorted(HEADS))
def test_forward_loss_decode_marginals(name: str) -> None:
    torch.manual_seed(0)
    head = make_head(name)
    features, mask = batch()
    features.requires_grad_(True)
    tags = torch.randint(0, len(TAGS), mask.shape).masked_fill(~mask, -100)

    emissions = head(features, mask)
    assert emissions.shape == (4, 7, len(TAGS))
    loss = head.loss(emissions, tags, mask)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)

    head.eval()
    with torch.no_grad():
        emissions = head(features, mask)
        paths = head.decode(emissions, mask)
        marginals = head.marginals(emissions, mask)
    assert [len(p) for p in paths] == mask.sum(1).tolist()
    assert all(is_valid_bio(p, TAGS) for p in paths)
    assert marginals.shape == (4, 7, len(TAGS))
    sums = marginals.sum(-1)
    torch.testing.assert_close(sums[mask], torch.ones(int(mask.sum())), atol=1e-5, rtol=0)
    assert (sums[~mask] == 0).all()


def test_bilstm_ignores_padding() -> None:
    torch.manual_seed(0)
    head = make_head("bert_bilstm_crf").eval()
    features, mask = batch()
    noisy = features.clone()
    noisy[~mask] = 1000.0
    with torch.no_grad():
        clean_out = head(features, mask)
        noisy_out = head(noisy, mask)
    torch.testing.assert_close(clean_out[mask], noisy_out[mask])


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_overfits_fixed_batch(name: str) -> None:
    torch.manual_seed(0)
    head = build_head(
        name, HIDDEN, SMALL_TAGS, HeadConfig(dropout=0.0, lstm_hidden=16, fc_hidden=32)
    )
    features, mask = batch(seed=1)
    gold = [
        [0, 1, 2, 2, 0, 3, 4],
        [3, 4, 0, 1, 2],
        [1],
        [0, 0, 3],
    ]
    tags = torch.full(mask.shape, -100, dtype=torch.long)
    for row, path in enumerate(gold):
        tags[row, : len(path)] = torch.tensor(path)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.03)
    for _ in range(100):
        optimizer.zero_grad()
        head.loss(head(features, mask), tags, mask).backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        assert head.decode(head(features, mask), mask) == gold


def test_feature_validation() -> None:
    head = make_head("bert_crf")
    features, mask = batch()
    with pytest.raises(ValueError) as info:
        head(features[0], mask)
    assert str(info.value) == "features must have dimension of 3, got 2"
    with pytest.raises(ValueError) as info:
        head(features[..., :8], mask)
    assert str(info.value) == f"expected last dimension of features is {HIDDEN}, got 8"
    with pytest.raises(ValueError) as info:
        head(features, mask[:, :3])
    assert str(info.value) == (
        "the first two dimensions of features and mask must match, got (4, 7) and (4, 3)"
    )


def test_linear_loss_validation_and_value() -> None:
    head = make_head("bert_linear")
    emissions = torch.randn(2, 3, len(TAGS))
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    tags = torch.tensor([[1, 2, 0], [3, -100, -100]])
    expected = torch.nn.functional.cross_entropy(
        torch.cat([emissions[0], emissions[1, :1]]), torch.tensor([1, 2, 0, 3])
    )
    torch.testing.assert_close(head.loss(emissions, tags, mask), expected)
    with pytest.raises(ValueError) as info:
        head.loss(emissions, tags[:, :2], mask)
    assert str(info.value) == (
        "the first two dimensions of emissions and tags must match, got (2, 3) and (2, 2)"
    )
    with pytest.raises(ValueError) as info:
        head.decode(emissions[..., :3], mask)
    assert str(info.value) == f"expected last dimension of emissions is {len(TAGS)}, got 3"


def test_linear_decode_repairs_argmax() -> None:
    head = LinearHead(HIDDEN, SMALL_TAGS, 0.0, fc_hidden=8)
    # argmax: I-A, I-A, O, I-B, I-A
    emissions = torch.full((1, 5, 5), -5.0)
    for t, tag in enumerate([2, 2, 0, 4, 2]):
        emissions[0, t, tag] = 5.0
    paths = head.decode(emissions, torch.ones(1, 5, dtype=torch.bool))
    assert paths == [[1, 2, 0, 3, 1]]


def test_head_is_abstract() -> None:
    with pytest.raises(TypeError):
        Head(HIDDEN, TAGS)  # type: ignore[abstract]
