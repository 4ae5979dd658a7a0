"""Token selection (pure numpy): greedy, HF repetition penalty, top-k, top-p, temperature, seeded draws whose
empirical distribution matches the softmax; `GenerationConfig` validation and length budgeting."""
import numpy as np
import pytest

from mindkit.errors import ConfigError
from mindkit.generation.config import GenerationConfig
from mindkit.generation.sampling import Sampler, apply_repetition_penalty, top_k_top_p_filter

N_DRAWS = 20000


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def draw(cfg, logits, n=N_DRAWS):
    """``n`` independent draws for one row of logits (one Sampler call over a batch of identical rows)."""
    batch = np.tile(np.asarray(logits, np.float32), (n, 1))
    out = Sampler(cfg)(batch, [()] * n)
    assert out.shape == (n,)
    return np.bincount(out, minlength=len(logits)) / n


def assert_matches(freq, probs, tol=0.015):
    np.testing.assert_allclose(freq, probs, atol=tol)
    assert freq[np.asarray(probs) == 0].sum() == 0


# ---------------------------------------------------------------------------------------------------------------- greedy

def test_greedy_is_argmax_per_row():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 1000)).astype(np.float32)
    out = Sampler(GenerationConfig())(logits, [()] * 5)
    np.testing.assert_array_equal(out, logits.argmax(-1))


def test_greedy_ignores_sampling_knobs():
    logits = np.array([[0.1, 3.0, 2.9, -1.0]], np.float32)
    cfg = GenerationConfig(do_sample=False, temperature=0.01, top_k=3, top_p=0.5, seed=1)
    assert Sampler(cfg)(logits, [()]).tolist() == [1]


# ---------------------------------------------------------------------------------------------------- repetition penalty

def test_repetition_penalty_hf_semantics():
    logits = np.array([[2.0, -2.0, 4.0, -1.0, 0.0, 3.0]], np.float32)
    out = apply_repetition_penalty(logits, [np.array([0, 1, 4])], 2.0)
    # seen positive → divided, seen negative → multiplied, seen zero stays, unseen untouched
    np.testing.assert_allclose(out, [[1.0, -4.0, 4.0, -1.0, 0.0, 3.0]])
    np.testing.assert_array_equal(logits, [[2.0, -2.0, 4.0, -1.0, 0.0, 3.0]])  # input not modified


def test_repetition_penalty_below_one_encourages_and_duplicates_count_once():
    logits = np.array([[2.0, -2.0, 1.0]], np.float32)
    out = apply_repetition_penalty(logits, [[0, 0, 1, 1, 1]], 0.5)
    np.testing.assert_allclose(out, [[4.0, -1.0, 1.0]])


def test_repetition_penalty_per_row_and_off():
    logits = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    out = apply_repetition_penalty(logits, [{0}, {2}], 4.0)
    np.testing.assert_allclose(out, [[0.25, 1.0, 1.0], [1.0, 1.0, 0.25]])
    assert apply_repetition_penalty(logits, [{0}, {2}], 1.0) is logits
    np.testing.assert_allclose(apply_repetition_penalty(logits, [(), ()], 3.0), logits)


def test_repetition_penalty_changes_greedy_choice():
    logits = np.array([[5.0, 4.0, 1.0]], np.float32)
    cfg = GenerationConfig(repetition_penalty=1.5)
    assert Sampler(cfg)(logits, [np.array([0])]).tolist() == [1]    # 5/1.5 < 4
    assert Sampler(GenerationConfig())(logits, [np.array([0])]).tolist() == [0]


# ----------------------------------------------------------------------------------------------------------------- top-k

@pytest.mark.parametrize("k", [1, 2, 7, 50, 99])
def test_top_k_keeps_exactly_k_largest(k):
    rng = np.random.default_rng(k)
    logits = rng.normal(size=(3, 100))
    out = top_k_top_p_filter(logits, k, 1.0)
    for row in range(3):
        kept = np.flatnonzero(np.isfinite(out[row]))
        assert len(kept) == k
        assert set(kept) == set(np.argsort(-logits[row])[:k])
        np.testing.assert_array_equal(out[row, kept], logits[row, kept])
        assert np.all(out[row][~np.isfinite(out[row])] == -np.inf)


@pytest.mark.parametrize("k", [0, 100, 1000])
def test_top_k_off_or_not_smaller_than_vocab_keeps_all(k):
    logits = np.random.default_rng(0).normal(size=(2, 100))
    np.testing.assert_array_equal(top_k_top_p_filter(logits, k, 1.0), logits)


# ----------------------------------------------------------------------------------------------------------------- top-p

PROBS = np.array([0.05, 0.5, 0.15, 0.3])   # sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0)


@pytest.mark.parametrize("top_p,kept", [
    (0.2, {1}),           # the first token already exceeds p
    (0.5 - 1e-6, {1}),
    (0.6, {1, 3}),        # 0.5 < 0.6 ≤ 0.8
    (0.79, {1, 3}),
    (0.81, {1, 3, 2}),
    (0.9, {1, 3, 2}),
    (0.96, {0, 1, 2, 3}),
    (1.0, {0, 1, 2, 3}),
])
def test_top_p_keeps_smallest_prefix_reaching_p(top_p, kept):
    logits = np.log(PROBS)[None]
    out = top_k_top_p_filter(logits, 0, top_p)
    assert set(np.flatnonzero(np.isfinite(out[0]))) == kept
    finite = np.isfinite(out[0])
    np.testing.assert_allclose(out[0, finite], logits[0, finite])


def test_top_p_tiny_keeps_at_least_one_token():
    logits = np.random.default_rng(1).normal(size=(4, 64))
    out = top_k_top_p_filter(logits, 0, 1e-9)
    assert (np.isfinite(out).sum(-1) == 1).all()
    np.testing.assert_array_equal(np.nanargmax(np.where(np.isfinite(out), out, np.nan), -1), logits.argmax(-1))


def test_top_p_mass_property_random():
    rng = np.random.default_rng(2)
    for _ in range(50):
        logits = rng.normal(scale=2.0, size=(1, 40))
        p = float(rng.uniform(0.05, 0.99))
        out = top_k_top_p_filter(logits, 0, p)
        probs = softmax(logits)[0]
        kept = np.isfinite(out[0])
        # kept = a prefix of the sorted probabilities whose mass reaches p, minus its last token would not
        order = np.argsort(-probs)
        n = kept.sum()
        assert set(np.flatnonzero(kept)) == set(order[:n])
        assert probs[kept].sum() >= p - 1e-12
        assert probs[order[:n - 1]].sum() < p


def test_top_k_then_top_p_on_the_renormalised_remainder():
    # top_k=2 leaves {1: 0.5, 3: 0.3} → renormalised 0.625 / 0.375; top_p 0.6 then keeps only token 1
    out = top_k_top_p_filter(np.log(PROBS)[None], 2, 0.6)
    assert set(np.flatnonzero(np.isfinite(out[0]))) == {1}


# ---------------------------------------------------------------------------------------------------- sampling itself

LOGITS = np.array([1.0, 2.0, 0.5, -1.0, 1.5, 0.0, 2.2, -0.3], np.float32)


def test_empirical_distribution_matches_softmax():
    freq = draw(GenerationConfig(do_sample=True, seed=0), LOGITS)
    assert_matches(freq, softmax(LOGITS))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_logits(temperature):
    freq = draw(GenerationConfig(do_sample=True, temperature=temperature, seed=3), LOGITS)
    assert_matches(freq, softmax(LOGITS / temperature))


def test_low_temperature_concentrates_on_argmax():
    freq = draw(GenerationConfig(do_sample=True, temperature=0.02, seed=4), LOGITS, n=2000)
    assert freq[LOGITS.argmax()] > 0.995     # runner-up: exp(-0.2 / 0.02) ≈ 5e-5


def test_sampling_with_top_k_and_top_p_matches_renormalised_softmax():
    probs = softmax(LOGITS)
    keep_k = np.argsort(-LOGITS)[:3]
    expected = np.zeros_like(probs)
    expected[keep_k] = probs[keep_k] / probs[keep_k].sum()
    assert_matches(draw(GenerationConfig(do_sample=True, top_k=3, seed=5), LOGITS), expected)

    p = softmax(LOGITS)
    order = np.argsort(-p)
    n = int(np.searchsorted(np.cumsum(p[order]), 0.7) + 1)
    expected = np.zeros_like(p)
    expected[order[:n]] = p[order[:n]] / p[order[:n]].sum()
    assert_matches(draw(GenerationConfig(do_sample=True, top_p=0.7, seed=6), LOGITS), expected)


def test_top_k_one_sampling_is_greedy():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(64, 500)).astype(np.float32)
    out = Sampler(GenerationConfig(do_sample=True, top_k=1, seed=7))(logits, [()] * 64)
    np.testing.assert_array_equal(out, logits.argmax(-1))


def _sequence(seed, steps=40):
    rng = np.random.default_rng(100)
    sampler = Sampler(GenerationConfig(do_sample=True, temperature=1.0, seed=seed))
    return [sampler(rng.normal(size=(2, 50)).astype(np.float32), [(), ()]).tolist() for _ in range(steps)]


def test_seeded_sampling_is_reproducible():
    assert _sequence(1234) == _sequence(1234)
    assert _sequence(1234) != _sequence(4321)


@pytest.mark.parametrize("top_k,top_p,temperature", [(50, 0.9, 0.7), (0, 0.9, 1.0), (0, 0.3, 0.5), (200, 1.0, 1.3),
                                                   (0, 1.0, 1.0), (1, 0.5, 1.0)])
def test_draws_equal_a_full_vocabulary_sort(top_k, top_p, temperature):
    """The sampler works on the few candidates top-k/top-p leave (a partition, not a sort of the vocabulary): the
    same tokens, draw for draw, as sorting the whole row and drawing from the filtered softmax over it."""
    rng = np.random.default_rng(9)
    logits = (rng.standard_normal((6, 49152)) * 3).astype(np.float32)
    logits[0, :5] = logits[0].max()                      # ties at the top
    cfg = GenerationConfig(do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature, seed=11)
    sampler, draws = Sampler(cfg), np.random.default_rng(11)
    for _ in range(5):
        got = sampler(logits, [()] * 6)
        x = (logits / temperature).astype(np.float64)
        if 0 < top_k < x.shape[1]:
            x[x < np.sort(x, -1)[:, -top_k][:, None]] = -np.inf
        order = np.argsort(-x, -1, kind="stable")
        p = softmax(np.take_along_axis(x, order, -1))
        drop = np.cumsum(p, -1) - p >= top_p
        np.put_along_axis(x, order, np.where(drop, -np.inf, np.take_along_axis(x, order, -1)), -1)
        cum = np.cumsum(softmax(x), -1)
        want = (cum <= draws.random((6, 1)) * cum[:, -1:]).sum(-1)
        np.testing.assert_array_equal(got, want)


def test_sampled_ids_are_valid_indices():
    logits = np.random.default_rng(8).normal(size=(256, 33)).astype(np.float32)
    out = Sampler(GenerationConfig(do_sample=True, top_p=0.9, top_k=10, seed=8))(logits, [()] * 256)
    assert out.dtype.kind in "iu" and out.min() >= 0 and out.max() < 33


# ------------------------------------------------------------------------------------------------- GenerationConfig

@pytest.mark.parametrize("kwargs,key", [
    (dict(top_p=0), "top_p"),
    (dict(top_p=-0.1), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(temperature=0, do_sample=True), "temperature"),
    (dict(temperature=-1.0, do_sample=True), "temperature"),
    (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_length=0), "max_length"),
])
def test_generation_config_validation(kwargs, key):
    with pytest.raises(ConfigError, match=key) as info:
        GenerationConfig(**kwargs)
    assert info.value.key == key


def test_generation_config_accepts_greedy_with_zero_temperature_and_int_eos():
    cfg = GenerationConfig(temperature=0, do_sample=False, eos_token_id=2)
    assert cfg.eos_token_id == (2,)
    assert GenerationConfig(eos_token_id=[2, 0]).eos_token_id == (2, 0)
    assert GenerationConfig(eos_token_id=None).eos_token_id == ()


@pytest.mark.parametrize("kwargs,prompt_len,seq_length,expected", [
    (dict(max_new_tokens=10), 5, 100, 10),
    (dict(max_new_tokens=10, max_length=8), 5, 100, 10),   # max_new_tokens wins over max_length
    (dict(max_length=20), 5, 100, 15),
    (dict(max_length=20), 25, 100, 0),                      # prompt already longer than max_length
    (dict(), 5, 100, 95),                                    # neither: fill the model's seq_length
    (dict(max_new_tokens=500), 5, 100, 95),                  # seq_length caps max_new_tokens
    (dict(max_length=500), 5, 100, 95),                      # ... and max_length
    (dict(max_new_tokens=3), 100, 100, 0),
])
def test_new_tokens_for(kwargs, prompt_len, seq_length, expected):
    assert GenerationConfig(**kwargs).new_tokens_for(prompt_len, seq_length) == expected
