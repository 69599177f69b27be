"""``spex-ray report``: the page's data (recurring interactions, effects, gaps), the command, and the
page itself rendered in headless Chromium (skipped with the reason when chromium is absent; CI
installs Debian's package), and ``Interactions._repr_html_`` drawing the same view."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from connectors.backends.fake import FakeBackend
from connectors.base import Example
from headless import Browser, chromium_path
from pipelines.cli import main
from pipelines.inputs import BadInput
from pipelines.method import MethodSpec
from pipelines.parts import PartWriter
from pipelines.reduce import error_rows, fit_example, rows_to_batch
from pipelines.report import gaps, read_rows, recurring, report, views
from spex_ray import Interactions
from spex_ray._html import terms_view
from pipelines.schema import EXPLANATION_SCHEMA

needs_chromium = pytest.mark.skipif(
    chromium_path() is None, reason="needs Debian's chromium for a real browser (apt-get install -y chromium)")

HOSTILE = "</script><img/src=x/onerror=alert(1)>"
SPEC = MethodSpec("spex-hard", None, 3, 2, 0, 2, "ls", 20, ("fourier", "fbii"))
# not x good (positions 2, 3) raises the output a lot; "good" alone lowers it; the first word a little.
TERMS = [[[3], 0.8], [[2, 3], 0.5], [[0], 0.05]]


def _explain(example: Example) -> list[dict]:
    layout = SPEC.layout(example.n)
    values = np.array([s.value for s in FakeBackend(terms=TERMS).score(example, layout.masks(0, layout.num_queries))])
    return fit_example(example, SPEC, layout, values)


def _job(folder, extra: int = 0):
    """An output folder: three examples that share "not x good", one with a hostile id and word,
    ``extra`` more, an error row, job.json and summary.json (with dollars spent)."""
    texts = {"ex-1": "this is not good at all", "ex-2": "it was Not good. really", "ex-3": "we are not good friends now",
             HOSTILE: f"a {HOSTILE} not good here"}
    texts.update({f"more-{k:03d}": f"sample {k} not good today" for k in range(extra)})
    writer = PartWriter(folder / "explanations", EXPLANATION_SCHEMA, "run", {"spex_ray.backend": '{"model": "planted"}'})
    for example_id, text in texts.items():
        writer.append(rows_to_batch(_explain(Example.from_text(example_id, text))))
    writer.append(rows_to_batch(error_rows(BadInput("ex-bad", "missing field 'text'"), SPEC, "missing field 'text'")))
    writer.flush()
    (folder / "job.json").write_text(json.dumps({"config": {"method": "spex-hard", "backend": {"name": "fake"}},
                                                 "config_hash": "abc123"}))
    (folder / "summary.json").write_text(json.dumps({"queries_sent": 1234, "queries_reused": 5, "seconds": 750.0,
                                                     "limiter": {"spent_usd": 1.5}}))
    return folder


def _data(page: str) -> dict:
    """The JSON embedded in a report page."""
    raw = re.search(r'<script type="application/json" id="spx-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def test_views_show_effects_of_keeping_and_the_strongest_interactions():
    terms = [((), 9.0), ((0,), 0.5), ((1,), -0.25), ((0, 1), 0.125), ((1, 2), -1.0), ((0, 2), 0.01)]
    keys, values = zip(*terms)
    view = terms_view("e", ["a", "b", "c"], keys, values, "fourier", top=2, r2=0.5)
    assert view["e"] == [-1, 0.5, 0]  # (-2)^1 F
    assert view["x"] == [[[1, 2], -4], [[0, 1], 0.5]]  # (-2)^2 F, strongest first, top 2
    assert view["r2"] == 0.5 and "g" not in view and "err" not in view
    same = terms_view("e", ["a", "b", "c"], keys, values, "fbii")
    assert same["e"] == [0.5, -0.25, 0] and same["x"][0] == [[1, 2], -1]
    error = terms_view("e", ["a"], [], [], "fbii", error="boom")
    assert error["err"] == "boom" and "e" not in error


def test_views_of_a_table_match_the_views_of_its_rows(tmp_path):
    job = _job(tmp_path / "out", extra=3)
    for index in ("fourier", "fbii"):
        table, indices, _ = read_rows(job, index)
        assert indices == ["fbii", "fourier"] and table.num_rows == 8
        for view, row in zip(views(table, top=2), table.to_pylist(), strict=True):
            ok = row["status"] == "ok"
            terms = row["interactions"] or []
            expected = terms_view(row["example_id"], row["features"] or [], [t["features"] for t in terms],
                                  [t["value"] for t in terms], index, top=2, r2=row["faithfulness_r2"],
                                  fit_r2=row.get("fit_r2"), full=row["full_value"], empty=row["empty_value"],
                                  error=None if ok else row["error"])
            assert view == expected


def test_gaps_follow_spans_and_image_rows():
    spans = [{"start": 0, "end": 3}, {"start": 4, "end": 6}, {"start": 6, "end": 7}]
    assert gaps(["one", "is", "!"], spans) == " 0"
    assert gaps(["a", "b", "c"], None) == "  "
    assert gaps(["r0c0", "r0c1", "r1c0", "r1c1"], None) == " \n "


def test_recurring_groups_words_counts_each_example_once_and_keeps_signs():
    def view(words, pairs):
        return {"w": words, "x": pairs}

    views = [
        view(["Not", "good."], [[[0, 1], 2.0]]),
        view(["not", "good", "not", "good"], [[[0, 3], -3.0], [[0, 1], 1.0], [[2, 3], 0.5]]),
        view(["not", "good"], [[[0, 1], -0.5]]),
        view(["once", "only"], [[[0, 1], 9.0]]),
    ]
    rows = recurring(views)
    assert [row[0] for row in rows] == ["not × good"]  # "once × only" recurs nowhere
    label, count, mean, positive, negative, total, positions, ranks = rows[0]
    # example 1 counts once, with its strongest "not x good" term (-3.0: a view lists terms strongest first)
    assert (count, positive, negative, positions, ranks) == (3, 1, 2, [0, 1, 2], [0, 0, 0])
    assert mean == pytest.approx((2.0 - 3.0 - 0.5) / 3, rel=1e-3) and total == pytest.approx(5.5)


def test_report_page_is_self_contained_and_holds_every_example(tmp_path):
    job = _job(tmp_path / "out")
    path = report(job)
    assert path == job / "report.html"
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "@import" not in page
    assert "url(http" not in page and "<link" not in page
    data = _data(page)
    ids = [view["id"] for view in data["examples"]]
    assert ids == sorted(ids) and len(ids) == 5 and HOSTILE in ids
    assert HOSTILE not in page  # escaped wherever it appears
    bad = next(v for v in data["examples"] if v["id"] == "ex-bad")
    assert bad["err"] == "missing field 'text'"
    first = next(v for v in data["examples"] if v["id"] == "ex-1")
    assert first["w"] == "this is not good at all".split() and first["x"][0][0] == [2, 3]
    assert first["e"][3] < 0 < first["x"][0][1]
    assert data["recurring"][0][:2] == ["not × good", 4]
    assert "$1.50" in page and "1,234" in page and "12.5 min" in page and "planted" in page
    assert page.count("<rect") >= 1  # the R² histogram


def test_report_command(tmp_path, capsys):
    job = _job(tmp_path / "out")
    target = tmp_path / "elsewhere.html"
    assert main(["report", str(job), "--output", str(target), "--index", "fourier", "--top", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert "index <b>fourier</b>" in target.read_text()
    assert main(["report", str(job), "--index", "shapley"]) == 1
    assert "no 'shapley' rows" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no explanations in" in capsys.readouterr().err


def test_repr_html_needs_no_pyarrow():
    code = (
        "import sys; from spex_ray import Interactions\n"
        "i = Interactions({(0,): 1.0, (0, 1): -0.5}, 2, 'fbii', feature_names=['a', '<b>'])\n"
        "html = i._repr_html_()\n"
        "assert 'spx-root' in html and '&lt;b&gt;' in html and '<b>' not in html.split('<script')[0], html\n"
        "assert 'pyarrow' not in sys.modules and 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        pytest.skip("needs Debian's chromium for a real browser (apt-get install -y chromium)")
    with Browser() as opened:
        yield opened


def _cards(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#spx-examples .spx-card')].map(c => c.dataset.id)")


def _type(page, selector: str, text: str) -> None:
    page.evaluate(f"(() => {{ const q = document.querySelector({json.dumps(selector)}); q.value = {json.dumps(text)};"
                  " q.dispatchEvent(new Event('input')); })()")


@needs_chromium
def test_report_renders_in_chromium_and_filters(tmp_path, browser):
    path = report(_job(tmp_path / "out", extra=40))
    page = browser.open(path.as_uri(), height=1400)
    assert page.evaluate("document.body.dataset.ready") is not None
    page.screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert page.errors == []
    assert all(url.startswith(("file:", "data:", "about:")) for url in page.requests), page.requests
    # What a reader must see: the job, the legend, the recurring table, the first page of examples.
    text = page.evaluate("document.body.innerText")
    assert "spex-ray report" in text and "$1.50" in text and "Faithfulness" in text
    assert page.evaluate("getComputedStyle(document.querySelector('#spx-legend .spx-ramp')).backgroundImage") \
        .startswith("linear-gradient")
    assert "keeping the feature lowers the output" in text and "raises it" in text
    table = page.evaluate("[...document.querySelectorAll('#spx-recurring tbody tr')].map(r => r.innerText)")
    assert table[0].split("\t")[:2] == ["not × good", "44"]
    assert len(_cards(page)) == 20 and "1–20 of 45 examples" in text
    card = page.evaluate("document.querySelector('.spx-card[data-id=\"ex-1\"]').innerText")
    assert "this is not good at all" in card and "not × good" in card and "R² 1.000" in card
    shaded = page.evaluate("document.querySelector('.spx-card[data-id=\"ex-1\"] .spx-w:nth-child(4)').style.background")
    assert shaded.startswith("rgb(") and page.evaluate(
        "document.querySelector('.spx-card[data-id=\"ex-1\"] .spx-w:nth-child(4)').title").startswith("good: −")
    csv = page.evaluate(
        "(async () => { let blob; const make = URL.createObjectURL, click = HTMLAnchorElement.prototype.click;"
        " URL.createObjectURL = b => { blob = b; return 'about:blank'; }; HTMLAnchorElement.prototype.click = () => {};"
        " document.querySelector('#spx-csv').click();"
        " URL.createObjectURL = make; HTMLAnchorElement.prototype.click = click; return await blob.text(); })()")
    assert csv.splitlines() == ["interaction,examples,mean_effect,positive,negative,total_abs_effect",
                                '"not × good",44,2,44,0,88']
    # Pages, the id filter (kept in the address), the recurring table's click, the error filter.
    page.evaluate("document.querySelector('.spx-next').click()")
    assert _cards(page)[0] == "more-015" and "21–40 of 45" in page.evaluate("document.body.innerText")
    _type(page, "#spx-query", "EX-")
    assert _cards(page) == ["ex-1", "ex-2", "ex-3", "ex-bad"]
    assert page.evaluate("location.hash") == "#id=EX-"
    page.evaluate("document.querySelector('#spx-status').value = 'error';"
                  "document.querySelector('#spx-status').dispatchEvent(new Event('change'))")
    assert _cards(page) == ["ex-bad"]
    assert "error: missing field 'text'" in page.evaluate("document.querySelector('#spx-examples').innerText")
    page.evaluate("document.querySelector('#spx-status').value = 'all';"
                  "document.querySelector('#spx-status').dispatchEvent(new Event('change'))")
    _type(page, "#spx-query", "")
    page.evaluate("document.querySelector('#spx-recurring tbody tr').click()")
    assert len(_cards(page)) == 20 and "ex-bad" not in _cards(page)
    assert "of 44 matching examples" in page.evaluate("document.body.innerText")
    marked = page.evaluate("[...document.querySelectorAll('#spx-examples .spx-marked')].map(r => r.innerText)")
    assert len(marked) == 20 and all(m.lower().startswith(("not × good\t", "not × good.\t")) for m in marked)
    page.evaluate("document.querySelector('#spx-only-clear').click()")
    assert "of 45 examples" in page.evaluate("document.body.innerText")
    # The hostile id and word are shown as text, not run.
    linked = browser.open(path.as_uri() + "#id=" + "%3C%2Fscript")
    assert _cards(linked) == [HOSTILE] and linked.errors == []
    assert HOSTILE in linked.evaluate("document.querySelector('#spx-examples').innerText")
    _type(page, "#spx-query", HOSTILE)
    assert _cards(page) == [HOSTILE]
    assert HOSTILE in page.evaluate("document.querySelector('#spx-examples').innerText")
    assert page.errors == []


@needs_chromium
def test_repr_html_renders_the_same_card(tmp_path, browser):
    words = "the film was not bad , not bad at all".split()
    first = Interactions({(3,): 0.3, (4,): -0.6, (3, 4): 0.9, (6, 7): 0.4, (): 0.1}, len(words), "fbii",
                         feature_names=words)
    second = Interactions({(0,): 1.0, (0, 1): -0.5}, 2, "fourier")
    # A notebook page with two outputs: each draws its own card, and the fallback text goes.
    (tmp_path / "nb.html").write_text(f"<!DOCTYPE html><html><body>{first._repr_html_()}{second._repr_html_()}</body></html>")
    page = browser.open((tmp_path / "nb.html").as_uri(), height=600)
    assert page.errors == []
    cards = page.evaluate("[...document.querySelectorAll('.spx-card')].map(c => c.innerText)")
    assert len(cards) == 2 and not page.evaluate("document.querySelectorAll('.spx-fallback').length")
    assert "the film was not bad , not bad at all" in cards[0]
    assert "not1 × bad1" in cards[0].replace("\n", "") or "not\n1\n × bad\n1" in cards[0]
    assert "raises it" in cards[0]
    # fourier shown as (-2)^|T| F: feature 0 alone -2.0, 0 x 1 -2.0
    assert "±2.000" in cards[1] and "0 × 1\t\n\t−2.000" in cards[1]
    page.screenshot(str(tmp_path / "notebook.png"))
