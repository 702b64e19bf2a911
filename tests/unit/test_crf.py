"""Tests of the constrained CRF: Viterbi, marginals, loss and validation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torchcrf import CRF

from complex_ner.core.bio import parse_tag
from complex_ner.domain.models.crf import (
    ConstrainedCRF,
    bio_transition_masks,
    crf_marginals,
    viterbi_decode,
)
from complex_ner.domain.models.numpy_crf import CRFScores, viterbi
from complex_ner.domain.models.numpy_crf import crf_marginals as crf_marginals_np

SMALL_TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]

REAL_TAGS = [
    "O",
    *(
        f"{prefix}-{entity}"
        for entity in ("PER", "LOC", "GRP", "CORP", "PROD", "CW")
        for prefix in "BI"
    ),
]


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


def path_score(crf: CRF, emissions: torch.Tensor, path: list[int]) -> float:
    score = crf.start_transitions[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score = score + crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
    return float((score + crf.end_transitions[path[-1]]).detach())


def all_paths(length: int, tags: list[str], constrain: bool) -> list[tuple[int, ...]]:
    paths = itertools.product(range(len(tags)), repeat=length)
    return [p for p in paths if not constrain or is_valid_bio(list(p), tags)]


def random_prefix_mask(generator: torch.Generator, batch: int, seq_len: int) -> torch.Tensor:
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len  # keep at least one full row so seq_len matters
    return torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)


def randomise(crf: CRF, generator: torch.Generator, scale: float = 1.0) -> None:
    with torch.no_grad():
        for param in (crf.start_transitions, crf.transitions, crf.end_transitions):
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


VITERBI_PATHS = ["torch", "numpy"]


def numpy_scores(crf: CRF, tags: list[str] | None = None, constrain: bool = False) -> CRFScores:
    """The scores of a torchcrf CRF for the numpy decoder."""
    names = tags if tags is not None else [f"T{i}" for i in range(crf.num_tags)]
    return CRFScores(
        names,
        crf.start_transitions.detach().float().numpy(),
        crf.transitions.detach().float().numpy(),
        crf.end_transitions.detach().float().numpy(),
        constrain=constrain,
    )


def decode_with(path: str, crf: CRF, emissions: torch.Tensor, mask: torch.Tensor) -> list:
    """Unconstrained decoding by the torch loop or the numpy twin."""
    if path == "numpy":
        return viterbi(emissions.float().numpy(), mask.sum(1).tolist(), numpy_scores(crf))
    return viterbi_decode(
        emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions
    )


def model_decode(
    path: str, model: ConstrainedCRF, emissions: torch.Tensor, mask: torch.Tensor
) -> list:
    """What ``model.decode`` gives, by the torch loop or the numpy twin."""
    if path == "numpy":
        scores = numpy_scores(model.crf, list(model.tags), constrain=model.constrain)
        return viterbi(emissions.float().numpy(), mask.sum(1).tolist(), scores)
    return model.decode(emissions, mask)


def log_uniform_int(generator: torch.Generator, high: int) -> int:
    """An int in [1, high], log-uniform: both ends are drawn often and inputs stay cheap."""
    return min(high, int(math.exp(torch.rand(1, generator=generator).item() * math.log(high + 1))))


def test_bio_transition_masks() -> None:
    start, trans, end = bio_transition_masks(SMALL_TAGS)
    assert start.tolist() == [True, True, False, True, False]
    assert end.tolist() == [True] * 5
    # rows: from O, B-A, I-A, B-B, I-B; columns: to the same
    assert trans.tolist() == [
        [True, True, False, True, False],
        [True, True, True, True, False],
        [True, True, True, True, False],
        [True, True, False, True, True],
        [True, True, False, True, True],
    ]
    assert trans.dtype == start.dtype == end.dtype == torch.bool


@pytest.mark.parametrize("bad", ["X-PER", "B-", "I", "b-PER", "BPER", ""])
def test_bio_transition_masks_rejects_non_bio(bad: str) -> None:
    with pytest.raises(ValueError, match=f"invalid BIO tag {bad!r}"):
        bio_transition_masks(["O", bad])


def test_bio_transition_masks_rejects_empty_and_duplicates() -> None:
    with pytest.raises(ValueError, match="tags must not be empty"):
        bio_transition_masks([])
    with pytest.raises(ValueError, match="tags must be unique"):
        bio_transition_masks(["O", "B-A", "O"])


@pytest.mark.parametrize("path", VITERBI_PATHS)
@pytest.mark.parametrize("constrain", [False, True])
def test_decode_matches_brute_force(constrain: bool, path: str) -> None:
    generator = torch.Generator().manual_seed(0)
    model = ConstrainedCRF(SMALL_TAGS, constrain=constrain)
    for _ in range(40):
        randomise(model.crf, generator, scale=2.0)
        batch, seq_len = 3, int(torch.randint(1, 5, (1,), generator=generator))
        emissions = torch.randn(batch, seq_len, len(SMALL_TAGS), generator=generator) * 2
        mask = random_prefix_mask(generator, batch, seq_len)
        decoded = model_decode(path, model, emissions, mask)
        for b in range(batch):
            length = int(mask[b].sum())
            candidates = all_paths(length, SMALL_TAGS, constrain)
            scores = [path_score(model.crf, emissions[b], list(p)) for p in candidates]
            best = list(candidates[max(range(len(scores)), key=scores.__getitem__)])
            assert decoded[b] == best
            if constrain:
                assert is_valid_bio(decoded[b], SMALL_TAGS)


def test_unconstrained_viterbi_equals_torchcrf_exactly() -> None:
    generator = torch.Generator().manual_seed(1234)
    crf = CRF(len(REAL_TAGS), batch_first=True)
    cases = 0
    for case in range(2000):
        num_tags = int(torch.randint(2, 14, (1,), generator=generator))
        if crf.num_tags != num_tags:
            crf = CRF(num_tags, batch_first=True)
        batch = int(torch.randint(1, 9, (1,), generator=generator))
        seq_len = int(torch.randint(1, 13, (1,), generator=generator))
        if case % 4 == 0:
            # Small integers make ties frequent, which checks the tie-breaking too.
            emissions = torch.randint(-2, 3, (batch, seq_len, num_tags), generator=generator)
            emissions = emissions.float()
            with torch.no_grad():
                for param in (crf.start_transitions, crf.transitions, crf.end_transitions):
                    param.copy_(torch.randint(-1, 2, param.shape, generator=generator).float())
        else:
            emissions = torch.randn(batch, seq_len, num_tags, generator=generator) * 3
            randomise(crf, generator)
        mask = random_prefix_mask(generator, batch, seq_len)
        expected = crf.decode(emissions, mask)
        # One torchcrf reference, both implementations checked against it.
        for path in VITERBI_PATHS:
            assert decode_with(path, crf, emissions, mask) == expected, f"case {case}, {path}"
        cases += 1
    assert cases == 2000


@pytest.mark.parametrize("batch", [1, 3, 8, 9, 40])
def test_viterbi_equals_torchcrf_with_ties_and_varied_lengths(batch: int) -> None:
    # Covers both backtracks (plain Python for small batches, NumPy for larger ones), every
    # length from 1 to seq_len in one batch, all-equal lengths and exact score ties.
    generator = torch.Generator().manual_seed(batch)
    for case in range(60):
        num_tags = (1, 2, 5, 13)[case % 4]
        seq_len = int(torch.randint(1, 41, (1,), generator=generator))
        crf = CRF(num_tags, batch_first=True)
        if case % 2 == 0:
            emissions = torch.randint(-1, 2, (batch, seq_len, num_tags), generator=generator)
            emissions = emissions.float()
            with torch.no_grad():
                for param in (crf.start_transitions, crf.transitions, crf.end_transitions):
                    param.copy_(torch.randint(-1, 2, param.shape, generator=generator).float())
        else:
            emissions = torch.randn(batch, seq_len, num_tags, generator=generator)
            randomise(crf, generator)
        if case % 3 == 0:
            lengths = torch.full((batch,), seq_len)
        else:
            lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
            lengths[: min(batch, seq_len)] = torch.arange(seq_len, 0, -1)[:batch]
        mask = torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)
        expected = crf.decode(emissions, mask)
        for path in VITERBI_PATHS:
            with torch.inference_mode():
                got = decode_with(path, crf, emissions, mask)
            assert got == expected, f"case {case}, {path}"
            assert [len(p) for p in got] == lengths.tolist()


@pytest.mark.parametrize("path", VITERBI_PATHS)
def test_constrained_decode_is_always_valid_bio(path: str) -> None:
    generator = torch.Generator().manual_seed(7)
    model = ConstrainedCRF(REAL_TAGS)
    for _ in range(20):
        randomise(model.crf, generator, scale=20.0)
        emissions = torch.randn(16, 20, len(REAL_TAGS), generator=generator) * 50
        # Push I- tags up so an unconstrained decoder would often produce invalid BIO.
        emissions[:, :, 2::2] += 30
        mask = random_prefix_mask(generator, 16, 20)
        decoded = model_decode(path, model, emissions, mask)
        for tags, length in zip(decoded, mask.sum(1).tolist(), strict=True):
            assert len(tags) == length
            assert is_valid_bio(tags, REAL_TAGS)


@pytest.mark.parametrize("path", VITERBI_PATHS)
def test_all_forbidden_still_decodes(path: str) -> None:
    # Only I- tags: every start is forbidden, yet decoding must return valid ids.
    model = ConstrainedCRF(["I-A", "I-B"])
    emissions = torch.randn(2, 3, 2)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    paths = model_decode(path, model, emissions, mask)
    assert [len(p) for p in paths] == [3, 1]
    assert all(0 <= t < 2 for p in paths for t in p)
    marginals = model.marginals(emissions, mask)
    assert torch.isfinite(marginals).all()


@pytest.mark.parametrize("constrain", [False, True])
def test_marginals_match_brute_force(constrain: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    model = ConstrainedCRF(SMALL_TAGS, constrain=constrain)
    for _ in range(15):
        randomise(model.crf, generator)
        batch, seq_len = 3, int(torch.randint(1, 5, (1,), generator=generator))
        emissions = torch.randn(batch, seq_len, 5, generator=generator, dtype=torch.float64)
        mask = random_prefix_mask(generator, batch, seq_len)
        marginals = model.marginals(emissions, mask)
        assert marginals.shape == (batch, seq_len, 5)
        for b in range(batch):
            length = int(mask[b].sum())
            candidates = all_paths(length, SMALL_TAGS, constrain)
            scores = torch.tensor(
                [path_score(model.crf, emissions[b], list(p)) for p in candidates]
            )
            probs = torch.softmax(scores.double(), dim=0)
            expected = torch.zeros(seq_len, 5, dtype=torch.float64)
            for prob, path in zip(probs, candidates, strict=True):
                for t, tag in enumerate(path):
                    expected[t, tag] += prob
            torch.testing.assert_close(marginals[b], expected, atol=1e-6, rtol=1e-6)
            sums = marginals[b, :length].sum(-1)
            torch.testing.assert_close(sums, torch.ones(length, dtype=torch.float64))
            assert (marginals[b, length:] == 0).all()


def test_marginals_sum_to_one_real_tags() -> None:
    generator = torch.Generator().manual_seed(5)
    model = ConstrainedCRF(REAL_TAGS)
    emissions = torch.randn(8, 15, len(REAL_TAGS), generator=generator) * 5
    mask = random_prefix_mask(generator, 8, 15)
    marginals = model.marginals(emissions, mask)
    sums = marginals.sum(-1)
    torch.testing.assert_close(sums[mask], torch.ones(int(mask.sum())), atol=1e-5, rtol=0)
    assert (sums[~mask] == 0).all()
    # Constrained marginals put no mass on I- tags at the first position.
    assert marginals[:, 0, 2::2].max() < 1e-6


def test_crf_marginals_function_unconstrained_sums() -> None:
    crf = CRF(4, batch_first=True)
    emissions = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    marginals = crf_marginals(
        emissions, mask, crf.start_transitions, crf.transitions, crf.end_transitions
    )
    torch.testing.assert_close(marginals.sum(-1), mask.float())


def test_loss_equals_negative_torchcrf_llh_mean() -> None:
    generator = torch.Generator().manual_seed(11)
    model = ConstrainedCRF(REAL_TAGS)
    emissions = torch.randn(4, 6, len(REAL_TAGS), generator=generator, requires_grad=True)
    tags = torch.randint(0, len(REAL_TAGS), (4, 6), generator=generator)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 1 + [0] * 5, [1] * 5 + [0]])
    expected = -model.crf(emissions, tags, mask.bool(), reduction="mean")
    # Padding labels such as -100 must be ignored, and integer masks accepted.
    padded_tags = tags.masked_fill(~mask.bool(), -100)
    loss = model.loss(emissions, padded_tags, mask)
    assert loss.dim() == 0 and math.isfinite(loss.item())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert emissions.grad is not None and torch.isfinite(emissions.grad).all()
    assert model.crf.transitions.grad is not None


def test_loss_rejects_out_of_range_tags() -> None:
    model = ConstrainedCRF(SMALL_TAGS)
    emissions = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match=r"tags at unmasked positions must be in \[0, 5\)"):
        model.loss(emissions, torch.tensor([[0, 5]]), torch.ones(1, 2, dtype=torch.bool))


def test_exact_error_messages() -> None:
    model = ConstrainedCRF(SMALL_TAGS)
    emissions = torch.randn(2, 3, 5)
    tags = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.ones(2, 3, dtype=torch.bool)

    def raises(message: str, fn: Callable[..., object], *args: object) -> None:
        with pytest.raises(ValueError) as info:
            fn(*args)
        assert str(info.value) == message

    raises("emissions must have dimension of 3, got 2", model.decode, emissions[0], mask)
    raises(
        "expected last dimension of emissions is 5, got 4", model.decode, emissions[..., :4], mask
    )
    raises(
        "the first two dimensions of emissions and mask must match, got (2, 3) and (2, 2)",
        model.decode,
        emissions,
        mask[:, :2],
    )
    raises(
        "the first two dimensions of emissions and tags must match, got (2, 3) and (2, 4)",
        model.loss,
        emissions,
        torch.zeros(2, 4, dtype=torch.long),
        mask,
    )
    off_first = mask.clone()
    off_first[1, 0] = False
    raises("mask of the first timestep must all be on", model.loss, emissions, tags, off_first)
    raises("mask of the first timestep must all be on", model.marginals, emissions, off_first)
    gap = torch.tensor([[1, 0, 1], [1, 1, 1]])
    raises(
        "mask must be a prefix mask: no timestep may be on after an off one",
        model.decode,
        emissions,
        gap,
    )
    raises(
        "mask must be a bool or integer tensor, got torch.float32",
        model.decode,
        emissions,
        mask.float(),
    )
    raises(
        "emissions must have at least one timestep",
        model.decode,
        torch.randn(2, 0, 5),
        torch.ones(2, 0, dtype=torch.bool),
    )
    raises(
        "transitions must have shape (5, 5), got (4, 4)",
        viterbi_decode,
        emissions,
        mask,
        torch.zeros(5),
        torch.zeros(4, 4),
        torch.zeros(5),
    )


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.long, torch.int32])
def test_mask_dtypes_accepted(dtype: torch.dtype) -> None:
    model = ConstrainedCRF(SMALL_TAGS)
    emissions = torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).to(dtype)
    assert [len(p) for p in model.decode(emissions, mask)] == [3, 2]
    assert model.marginals(emissions, mask).shape == (2, 3, 5)


def test_buffers_not_persistent_and_follow_module() -> None:
    model = ConstrainedCRF(SMALL_TAGS)
    state = model.state_dict()
    assert set(state) == {"crf.start_transitions", "crf.end_transitions", "crf.transitions"}
    model = model.double()
    assert model.trans_allowed.dtype == torch.bool
    paths = model.decode(
        torch.randn(1, 4, 5, dtype=torch.float64), torch.ones(1, 4, dtype=torch.long)
    )
    assert is_valid_bio(paths[0], SMALL_TAGS)


def test_empty_batch_decodes_to_empty_list() -> None:
    model = ConstrainedCRF(SMALL_TAGS)
    assert model.decode(torch.randn(0, 3, 5), torch.ones(0, 3, dtype=torch.bool)) == []


def test_torch_max_breaks_exact_ties_at_the_first_index() -> None:
    # numpy's argmax keeps the first maximal index: this is the torch CPU behaviour the numpy
    # decoder relies on, in the layouts torchcrf's recursion and final argmax use.
    row = torch.tensor([[1.0, 3.0, 3.0, -0.0, 3.0]])
    assert row.max(dim=1).indices.tolist() == [1]
    assert row.argmax(dim=1).tolist() == [1]
    assert torch.tensor([0.0, -0.0]).max(dim=0).indices.item() == 0
    # shape: (batch, from, to) reduced over "from", a strided reduction as in the recursion
    scores = torch.zeros(3, 25, 25)
    scores[:, 7:, :] = 1.0
    assert (scores.max(dim=1).indices == 7).all()


def test_numpy_equals_torchcrf_on_thousands_of_random_inputs() -> None:
    generator = torch.Generator().manual_seed(2024)
    inputs = mismatches = ties = 0
    for case in range(2000):
        batch = log_uniform_int(generator, 64)
        seq_len = log_uniform_int(generator, 64)
        num_tags = int(torch.randint(1, 26, (1,), generator=generator))
        crf = CRF(num_tags, batch_first=True)
        if case % 3 == 0:  # small integers: exact ties everywhere
            emissions = torch.randint(-2, 3, (batch, seq_len, num_tags), generator=generator)
            emissions = emissions.float()
            with torch.no_grad():
                for param in (crf.start_transitions, crf.transitions, crf.end_transitions):
                    param.copy_(torch.randint(-2, 3, param.shape, generator=generator).float())
            ties += 1
        else:
            scale = (0.1, 1.0, 10.0)[case % 3]
            emissions = torch.randn(batch, seq_len, num_tags, generator=generator) * scale
            randomise(crf, generator, scale=scale)
        mask = random_prefix_mask(generator, batch, seq_len)
        expected = crf.decode(emissions, mask)
        got = decode_with("numpy", crf, emissions, mask)
        mismatches += sum(a != b for a, b in zip(got, expected, strict=True))
        inputs += 1
    assert (inputs, ties, mismatches) == (2000, 667, 0)


def test_numpy_all_equal_scores_pick_torchcrf_path() -> None:
    # Every path ties: torch keeps index 0 at every max, so does numpy's argmax.
    crf = CRF(13, batch_first=True)
    with torch.no_grad():
        for param in (crf.start_transitions, crf.transitions, crf.end_transitions):
            param.zero_()
    emissions = torch.zeros(5, 9, 13)
    mask = torch.arange(9).unsqueeze(0) < torch.tensor([9, 1, 4, 9, 2]).unsqueeze(1)
    expected = crf.decode(emissions, mask)
    assert decode_with("numpy", crf, emissions, mask) == expected
    assert expected[0] == [0] * 9


def test_constrained_numpy_equals_torch_path() -> None:
    generator = torch.Generator().manual_seed(13)
    model = ConstrainedCRF(REAL_TAGS)
    for case in range(60):
        batch, seq_len = log_uniform_int(generator, 64), log_uniform_int(generator, 64)
        shape = (batch, seq_len, len(REAL_TAGS))
        if case % 2:
            emissions = torch.randint(-2, 3, shape, generator=generator).float()
            with torch.no_grad():
                model.crf.transitions.copy_(torch.randint(-1, 2, (13, 13), generator=generator))
        else:
            randomise(model.crf, generator, scale=3.0)
            emissions = torch.randn(shape, generator=generator) * 3
        mask = random_prefix_mask(generator, batch, seq_len)
        expected = model.decode(emissions, mask)
        assert model_decode("numpy", model, emissions, mask) == expected, f"case {case}"


@pytest.mark.parametrize("constrain", [False, True])
def test_numpy_marginals_match_torch_and_brute_force(constrain: bool) -> None:
    generator = torch.Generator().manual_seed(31)
    model = ConstrainedCRF(SMALL_TAGS, constrain=constrain)
    for _ in range(15):
        randomise(model.crf, generator)
        batch, seq_len = 3, int(torch.randint(1, 5, (1,), generator=generator))
        emissions = torch.randn(batch, seq_len, 5, generator=generator)
        mask = random_prefix_mask(generator, batch, seq_len)
        scores = numpy_scores(model.crf, SMALL_TAGS, constrain=constrain)
        got = crf_marginals_np(emissions.numpy(), mask.sum(1).tolist(), scores)
        # shape: (batch, seq_len, num_tags)
        expected = model.marginals(emissions, mask).detach().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        for b in range(batch):
            length = int(mask[b].sum())
            candidates = all_paths(length, SMALL_TAGS, constrain)
            weights = torch.tensor(
                [path_score(model.crf, emissions[b].double(), list(p)) for p in candidates]
            )
            probs = torch.softmax(weights.double(), dim=0)
            brute = np.zeros((seq_len, 5))
            for prob, path in zip(probs.tolist(), candidates, strict=True):
                for t, tag in enumerate(path):
                    brute[t, tag] += prob
            np.testing.assert_allclose(got[b], brute, atol=1e-5)
            assert (got[b, length:] == 0).all()


def test_numpy_decoder_rejects_bad_shapes_and_lengths() -> None:
    crf = numpy_scores(CRF(5, batch_first=True), SMALL_TAGS, constrain=True)
    with pytest.raises(ValueError, match="emissions must have dimension of 3, got 2"):
        viterbi(np.zeros((2, 5), dtype=np.float32), [1, 1], crf)
    with pytest.raises(ValueError, match="expected last dimension of emissions is 5, got 4"):
        viterbi(np.zeros((1, 2, 4), dtype=np.float32), [2], crf)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 2\], got \[3\]"):
        viterbi(np.zeros((1, 2, 5), dtype=np.float32), [3], crf)
    with pytest.raises(ValueError, match=r"transitions must have shape \(5, 5\), got \(4, 4\)"):
        CRFScores(SMALL_TAGS, np.zeros(5), np.zeros((4, 4)), np.zeros(5))


@pytest.mark.gpu
def test_cuda_tensors_decode_like_cpu() -> None:
    crf = CRF(13, batch_first=True)
    emissions = torch.randn(64, 20, 13)
    mask = random_prefix_mask(torch.Generator().manual_seed(1), 64, 20)
    expected = crf.decode(emissions, mask)
    crf = crf.cuda()
    got = viterbi_decode(
        emissions.cuda(), mask.cuda(), crf.start_transitions, crf.transitions, crf.end_transitions
    )
    assert got == expected
