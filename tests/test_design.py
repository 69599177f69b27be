import numpy as np
import pytest

from spex_ray.design import (
    FILL_STREAM,
    MIN_B,
    MIN_FILLED_B,
    FilledDesign,
    SpexDesign,
    UniformDesign,
    design_for_budget,
    design_from_params,
    spex_num_queries,
)

# Query counts from spex-algorithm.md §1 (t = 5, C = 3).
TABLE = {
    32: [1344, 5376, 21504, 86016],
    128: [1968, 7872, 31488, 125952],
    512: [2448, 9792, 39168, 156672],
    1000: [2688, 10752, 43008, 172032],
    2048: [2928, 11712, 46848, 187392],
}


@pytest.mark.parametrize("n", sorted(TABLE))
def test_num_queries_matches_the_reference_table(n):
    assert [spex_num_queries(n, b) for b in (4, 6, 8, 10)] == TABLE[n]
    assert SpexDesign(n, 4).num_queries == TABLE[n][0]


def test_masks_follow_the_definition():
    design = SpexDesign(40, 4, t=3, seed=7)
    masks = design.masks()
    assert masks.dtype == bool and masks.shape == (design.num_queries, 40)
    rows = design.p + 1
    for q in [0, 1, rows, 5 * rows * 3 + 2, design.num_queries - 1]:
        l, rest = divmod(q, design.groups * rows)
        c, r = divmod(rest, rows)
        l_bits = (l >> np.arange(design.b)) & 1
        expected = (design.subsampling[c].astype(int) @ l_bits + design.delays[r]) % 2
        assert np.array_equal(masks[q], expected.astype(bool))
    # delay row 0 of every (c, l) is the bare subsampled mask; l = 0 and r = 0 keeps nothing
    assert not masks[0].any()


def test_delay_rows_are_the_bch_parity_of_each_feature():
    design = SpexDesign(100, 3)
    k = np.zeros(100, dtype=bool)
    k[[3, 17, 64]] = True
    parity = design.code.encode(k[None])[0, : design.p]
    assert np.array_equal((design.delays[1:].astype(int) @ k) % 2, parity)


def test_slices_equal_the_full_matrix():
    design = SpexDesign(300, 5, seed=3)
    full = design.masks()
    assert np.array_equal(np.concatenate([design.masks(0, 1000), design.masks(1000, 1001), design.masks(1001)]), full)
    assert np.array_equal(design.masks(10, 500), full[10:500])


def test_designs_nest_across_b_and_are_deterministic():
    small, large = SpexDesign(200, 4, seed=11), SpexDesign(200, 7, seed=11)
    assert np.array_equal(large.masks(0, small.num_queries), small.masks())
    assert np.array_equal(SpexDesign(200, 4, seed=11).masks(), small.masks())
    assert not np.array_equal(SpexDesign(200, 4, seed=12).masks(), small.masks())


def test_for_budget_picks_the_largest_b_then_lowers_t():
    design = SpexDesign.for_budget(1000, 11000)
    assert (design.b, design.t, design.num_queries) == (6, 5, 10752)
    assert SpexDesign.for_budget(1000, 10751).b == 5
    # below t = 5 at MIN_B, the helper lowers t instead of b
    tight = SpexDesign.for_budget(1000, spex_num_queries(1000, MIN_B, 3))
    assert (tight.b, tight.t) == (MIN_B, 3)
    with pytest.raises(ValueError, match="below the minimum SPEX design"):
        SpexDesign.for_budget(1000, 100)


def test_uniform_design_is_sliceable_and_balanced():
    design = UniformDesign(50, 10000, seed=1)
    full = design.masks()
    assert np.array_equal(np.concatenate([design.masks(0, 4095), design.masks(4095, 9000), design.masks(9000)]), full)
    assert abs(full.mean() - 0.5) < 0.01
    assert not np.array_equal(UniformDesign(50, 100, seed=1, stream=1).masks(), full[:100])


def test_filled_design_is_spex_then_uniform_masks_and_nests():
    spex = SpexDesign(60, 4, seed=3)
    design = FilledDesign(spex, 500)
    masks = design.masks()
    assert design.num_queries == spex.num_queries + 500 and masks.shape == (design.num_queries, 60)
    assert np.array_equal(masks[: spex.num_queries], spex.masks())
    assert np.array_equal(masks[spex.num_queries :], UniformDesign(60, 500, seed=3, stream=FILL_STREAM).masks())
    cut = spex.num_queries - 7
    assert np.array_equal(np.concatenate([design.masks(0, cut), design.masks(cut, cut + 20), design.masks(cut + 20)]), masks)
    assert np.array_equal(FilledDesign(spex, 200).masks(), masks[: spex.num_queries + 200])


@pytest.mark.parametrize("n", [30, 85, 150, 1000])
@pytest.mark.parametrize("budget", [250, 1000, 2000, 5000, 12345])
def test_design_for_budget_spends_the_whole_budget(n, budget):
    design = design_for_budget(n, budget)
    assert design.num_queries == budget
    if spex_num_queries(n, MIN_FILLED_B) > budget:
        assert isinstance(design, UniformDesign) and design.stream == FILL_STREAM
    else:
        spex = design.spex if isinstance(design, FilledDesign) else design
        assert spex.t == 5 and spex.b == SpexDesign.for_budget(n, budget).b


def test_params_round_trip():
    for design in (SpexDesign(64, 4, t=3, groups=2, seed=5), UniformDesign(64, 300, seed=2, stream=1),
                   FilledDesign(SpexDesign(64, 4, seed=1), 77)):
        rebuilt = design_from_params(design.params())
        assert np.array_equal(rebuilt.masks(), design.masks())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SpexDesign(0, 4), "n must be"),
        (lambda: SpexDesign(10, 0), "b must be"),
        (lambda: UniformDesign(0, 10), "n must be"),
        (lambda: SpexDesign(10, 3).masks(0, 10**6), "outside"),
        (lambda: design_from_params({"kind": "grid"}), "unknown design kind"),
        (lambda: FilledDesign(SpexDesign(10, 3), 0), "fill must be"),
    ],
)
def test_errors_are_clear(make, message):
    with pytest.raises(ValueError, match=message):
        make()
