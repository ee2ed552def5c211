import numpy as np
import pyarrow as pa
import pytest

from siftkit.errors import ConfigError
from siftkit.selectors.base import SelectionContext, resolve_budget
from siftkit.selectors.dedup import ExactDedup
from siftkit.selectors.expr import Expression
from siftkit.selectors.filter import FilterSelector
from siftkit.selectors.quota import allocate
from siftkit.selectors.random import RandomSelector
from siftkit.selectors.stratified import StratifiedSelector
from siftkit.selectors.top import BottomSelector, TopSelector


def ctx(n=100, seed=0, **cols):
    rng = np.random.default_rng(1)
    sources = cols.pop("source", np.array(["a"] * (n // 2) + ["b"] * (n // 4) + ["c"] * (n - n // 2 - n // 4)))
    pool = pa.table({"id": [f"{i:04d}" for i in range(n)], "source": list(sources)})
    sig = {"x": rng.normal(size=n), "len": rng.integers(1, 50, size=n).astype(np.int64)}
    sig.update(cols)
    return SelectionContext(pool=pool, signals=pa.table(sig), seed=seed)


ALL = np.arange(100, dtype=np.int64)


def test_budget_forms():
    assert resolve_budget(500, 1000) == 500
    assert resolve_budget(0.05, 1000) == 50
    assert resolve_budget("5%", 1000) == 50
    assert resolve_budget("50k", 10**6) == 50000
    assert resolve_budget("1_000", 10**6) == 1000
    for bad in (0, -3, "abc", 1.5, "150%", float("nan"), float("inf"), True, [3]):
        with pytest.raises(ConfigError):
            resolve_budget(bad, 1000)


@pytest.mark.parametrize("budget", [1.0, "1.0", "100%", "100 %".replace(" ", "")])
def test_full_fraction_budget_means_every_candidate(budget):
    assert resolve_budget(budget, 1000) == 1000
    assert resolve_budget(budget, 7) == 7


def test_integer_budget_is_a_count_and_fractions_never_round_to_zero():
    assert resolve_budget(1, 1000) == 1
    assert resolve_budget("1", 1000) == 1
    assert resolve_budget(2000.0, 1000) == 2000       # a whole float above 1 is a count
    assert resolve_budget(0.001, 10) == 1
    assert resolve_budget("0.5", 9) == 4              # round half to even, as Python's round()


def test_random_is_seeded_and_exact():
    a = RandomSelector().run(ctx(seed=1), ALL, 30).kept
    b = RandomSelector().run(ctx(seed=1), ALL, 30).kept
    c = RandomSelector().run(ctx(seed=2), ALL, 30).kept
    assert len(a) == 30 and len(set(a)) == 30 and (a == b).all() and set(a) != set(c)
    assert sorted(RandomSelector().run(ctx(), ALL, 1000).kept) == list(range(100))


def test_top_bottom_ties_and_nan():
    x = np.array([3.0, np.nan, 5.0, 5.0, 1.0] + [0.0] * 95)
    c = ctx(x=x)
    assert TopSelector(by="x").run(c, ALL, 3).kept.tolist() == [2, 3, 0]
    assert BottomSelector(by="x").run(c, ALL, 2).kept.tolist() == [5, 6]
    r = TopSelector(by="x").run(c, ALL, 100)
    assert 1 not in r.kept and r.dropped == {"missing_value": 1}
    with pytest.raises(ConfigError, match="unknown column"):
        TopSelector(by="nope").run(c, ALL, 3)
    with pytest.raises(ConfigError, match="text"):
        TopSelector(by="source").run(c, ALL, 3)


def test_top_min_and_max_value():
    x = np.array([4.6, np.nan, 4.5, 2.0, 5.0] + [0.0] * 95)
    c = ctx(x=x)
    r = TopSelector(by="x", min_value=4.5).run(c, ALL, 10)
    assert r.kept.tolist() == [4, 0, 2] and r.dropped == {"missing_value": 1, "below_min": 96}
    r = TopSelector(by="x", min_value=4.5).run(c, ALL, 2)
    assert r.kept.tolist() == [4, 0]
    r = BottomSelector(by="x", max_value=2.0).run(c, ALL, 3)
    assert r.kept.tolist() == [5, 6, 7] and r.dropped == {"missing_value": 1, "above_max": 3}
    assert TopSelector(by="x").config() == {"by": "x"}
    with pytest.raises(ConfigError, match="min_value must be a number"):
        TopSelector(by="x", min_value="high")


def test_filter_expressions():
    c = ctx()
    x, ln = c.column("x"), c.column("len")
    r = FilterSelector("x > 0 and len >= 10").run(c, ALL, None)
    assert r.kept.tolist() == np.flatnonzero((x > 0) & (ln >= 10)).tolist()
    r2 = FilterSelector("source in ['a', 'c'] or not len < 40").run(c, ALL, None)
    src = c.column("source")
    assert r2.kept.tolist() == np.flatnonzero(np.isin(src, ["a", "c"]) | ~(ln < 40)).tolist()
    r3 = FilterSelector("log(len) > quantile(log(len), 0.5)").run(c, ALL, None)
    assert 0 < len(r3.kept) <= 50
    r4 = FilterSelector("1 < len <= 10").run(c, ALL, None)
    assert r4.kept.tolist() == np.flatnonzero((ln > 1) & (ln <= 10)).tolist()


@pytest.mark.parametrize("bad", [
    "__import__('os').system('echo hi')", "x.__class__", "(lambda: 1)()", "x[0] > 1", "open('f')",
    "x if x else 1", "len > ", "{'a': 1}", "[i for i in x]", "x and y and", "x @ x",
])
def test_filter_rejects_unsafe_or_invalid(bad):
    with pytest.raises(ConfigError):
        Expression(bad)


def test_filter_type_errors_and_unknown_columns():
    c = ctx()
    with pytest.raises(ConfigError, match="compare text with a number"):
        FilterSelector("source > 3").run(c, ALL, None)
    with pytest.raises(ConfigError, match="unknown column 'nope'"):
        FilterSelector("nope > 3").run(c, ALL, None)
    with pytest.raises(ConfigError, match="condition"):
        FilterSelector("len + 1").run(c, ALL, None)


def test_nan_never_passes_a_filter():
    c = ctx(x=np.array([np.nan] * 100))
    assert len(FilterSelector("x > -1e9").run(c, ALL, None).kept) == 0


def test_exact_dedup_keep_first_and_longest():
    h = np.array([1, 2, 1, 3, 2, 1] + list(range(10, 104)), dtype=np.int64)
    ln = np.array([5, 1, 9, 1, 7, 9] + [1] * 94, dtype=np.int64)
    c = ctx(exact_hash=h, chars_total=ln)
    r = ExactDedup().run(c, ALL, None)
    assert r.kept[:3].tolist() == [0, 1, 3] and r.dropped == {"exact_duplicate": 3}
    assert r.details["duplicate_groups"] == 2
    r2 = ExactDedup(keep="longest").run(c, ALL, None)
    assert r2.kept[:3].tolist() == [2, 3, 4]  # longest of group 1 is row 2 (tie with 5 -> earliest)
    r3 = ExactDedup(report_groups=True).run(c, ALL, None)
    assert sorted(map(sorted, r3.details["groups"])) == [[0, 2, 5], [1, 4]]


def brute_allocate(cap, budget, weights):
    """Reference: hand out one unit at a time to the group furthest below its weighted share."""
    q = np.zeros(len(cap), int)
    for _ in range(min(budget, sum(cap))):
        open_ = [i for i in range(len(cap)) if q[i] < cap[i]]
        w = [max(0, weights[i]) for i in open_]
        i = open_[int(np.argmin([(q[j] + 1) / w_ if w_ > 0 else np.inf for j, w_ in zip(open_, w)]))] \
            if any(w) else open_[0]
        q[i] += 1
    return q


@pytest.mark.parametrize("seed", range(30))
def test_allocate_meets_budget_and_caps(seed):
    rng = np.random.default_rng(seed)
    cap = rng.integers(0, 40, size=rng.integers(1, 8))
    budget = int(rng.integers(1, 200))
    for w in (None, np.ones(len(cap))):
        q = allocate(cap, budget, w)
        assert q.sum() == min(budget, cap.sum()) and (q <= cap).all() and (q >= 0).all()
    # equal quotas: every group gets within 1 of the same number unless capped
    q = allocate(cap, budget, np.ones(len(cap)))
    free = q < cap
    if free.sum() > 1:
        assert q[free].max() - q[free].min() <= 1
    # proportional quotas stay within 1 of a brute-force sequential allocation
    ref = brute_allocate(cap, budget, cap.astype(float))
    assert np.abs(allocate(cap, budget) - ref).max() <= 1


def test_stratified_proportional_equal_and_redistribution():
    src = np.array(["a"] * 80 + ["b"] * 15 + ["c"] * 5)
    c = ctx(source=src)
    r = StratifiedSelector().run(c, ALL, 20)
    assert len(r.kept) == 20 and r.details["quotas"] == {"a": 16, "b": 3, "c": 1}
    r = StratifiedSelector(quota="equal").run(c, ALL, 30)
    assert r.details["quotas"] == {"a": 13, "b": 12, "c": 5}  # c has only 5: its share goes to a and b
    assert len(r.kept) == 30 and len(set(r.kept)) == 30
    r = StratifiedSelector(by="len").run(c, ALL, 10)
    ln = c.column("len")
    a_rows = [i for i in r.kept if src[i] == "a"]
    assert min(ln[a_rows]) >= np.sort(ln[:80])[-len(a_rows)]
    with pytest.raises(ConfigError):
        StratifiedSelector(quota="weird")


def test_stratified_is_deterministic_per_seed():
    a = StratifiedSelector().run(ctx(seed=3), ALL, 25).kept
    b = StratifiedSelector().run(ctx(seed=3), ALL, 25).kept
    c = StratifiedSelector().run(ctx(seed=4), ALL, 25).kept
    assert (a == b).all() and set(a) != set(c)


def test_selector_errors_name_the_step() -> None:
    from siftkit.config import parse_step
    from siftkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_step({"select": "kmeans", "k": 0}, "recipe: steps[2]")
    assert str(e.value).startswith("recipe: steps[2].select: kmeans: k must be")     # the name is not repeated
    with pytest.raises(ConfigError) as e:
        parse_step({"select": "kmeans", "kk": 3}, "recipe: steps[1]")
    assert str(e.value) == "recipe: steps[1].select: kmeans: got an unexpected keyword argument 'kk'"


@pytest.mark.parametrize("bad, msg", [
    ("10**10**10 > tokens_total", "overflows"),
    ("x * 10**309 > 1", "overflows"),
    ("x * 1e309 > 1", "too large"),
    ("x > 1" + "0" * 400, "too large"),
    ("[1]*10**9 == 1", "arithmetic needs numbers"),
    ("'ab' * 3 == x", "arithmetic needs numbers"),
    ("quantile(x, 'x') > 1", "quantile"),
    ("quantile(x, 2) > 1", "between 0 and 1"),
    ("min(x) > 1", "takes 2 arguments"),
    ("log(x, 2) > 1", "takes 1 argument"),
    ("log > 1", "is a function"),
    ("x + 1", "must be a condition"),
    ("x in 'abc'", "needs a list"),
    ("x in [y]", "constants"),
    ("not 3", "needs a condition"),
    ("'a' + x > 1", "arithmetic needs numbers"),
])
def test_filter_expressions_are_bounded_and_checked_when_parsed(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        Expression(bad)


def test_filter_expression_checked_against_column_kinds_before_work():
    e = Expression("source * 2 > 1")           # shape is fine; 'source' is text
    with pytest.raises(ConfigError, match="arithmetic needs numbers"):
        e.check_columns({})
    with pytest.raises(ConfigError, match="compare text with a number"):
        Expression("tokens_total == 'long'").check_columns({"tokens_total": "num"})
    with pytest.raises(ConfigError, match="lists or vectors"):
        Expression("emb > 1").check_columns({"emb": "other"})
    Expression("log1p(tokens_total) > 2 and source in ['a']").check_columns({"tokens_total": "num"})


def test_big_integer_constants_evaluate_in_float_without_hanging():
    c = ctx()
    x = c.column("x")
    r = FilterSelector("x * 10**300 > 10**299").run(c, ALL, None)
    assert r.kept.tolist() == np.flatnonzero(x * 1e300 > 1e299).tolist()
    r = FilterSelector("2**1000 > x").run(c, ALL, None)   # folded to a float once, at parse time
    assert len(r.kept) == 100
