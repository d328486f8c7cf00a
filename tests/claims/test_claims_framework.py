"""The claims framework: outcomes, the registry, claims.json, the page, the CLI, the section."""

import json
import math
import types

import pytest

from captum_ext.claims import CLAIMS, ClaimResult, ClaimSettings, Outcome, claim, run_claim
from captum_ext.claims._base import claim_figure
from captum_ext.claims.page import claims_html, verdict_counts, write_page
from captum_ext.claims.results import RESULTS_FILE, load_results, save_results
from captum_ext.cli import main
from captum_ext.report.sections import claims_section


def _outcome(**kw):
    base = dict(paper_value="0.9 (Table 1)", ours="0.8", verdict="holds", rule="ours > 0.5")
    return Outcome(**{**base, **kw})


@pytest.fixture
def registry(monkeypatch):
    """An empty claims registry for the test (the real one is restored afterwards)."""
    saved = dict(CLAIMS)
    CLAIMS.clear()
    yield CLAIMS
    CLAIMS.clear()
    CLAIMS.update(saved)


def _register_pair(tmp_path=None):
    @claim("good", "Paper A (2020)", "A is better than B.")
    def good(settings):
        fig = None
        if settings.out is not None:
            (settings.out / "good.png").write_bytes(b"\x89PNG fake")
            fig = "good.png"
        n = settings.pick(1, 2, 3)
        return _outcome(ours=f"n={n} <b>", numbers={"n": float(n), "curve": [1.0, 0.5]}, figure=fig)

    @claim("bad", "Paper B (2021)", "B is robust.")
    def bad(settings):
        return _outcome(verdict="partly", why="the benchmark is smaller", numbers={"x": 0.3})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "partly"}, "why"),
        ({"verdict": "does not hold", "why": ""}, "why"),
        ({"numbers": {"a": math.nan}}, "numbers['a']"),
        ({"numbers": {"a": [1.0, math.inf]}}, "numbers['a']"),
    ],
)
def test_outcome_refuses_bad_fields(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        _outcome(**kw)


def test_settings_check_and_pick():
    assert [ClaimSettings(size=s).pick(1, 2, 3) for s in ("test", "default", "full")] == [1, 2, 3]
    with pytest.raises(ValueError, match="size"):
        ClaimSettings(size="huge")
    with pytest.raises(TypeError, match="seed"):
        ClaimSettings(seed=1.5)


def test_registry_runs_times_and_checks(registry):
    _register_pair()
    assert list(registry) == ["good", "bad"]
    with pytest.raises(ValueError, match="registered twice"):
        claim("good", "p", "s")(lambda s: _outcome())
    result = run_claim("good", ClaimSettings(size="full"))
    assert result.outcome.numbers["n"] == 3.0 and result.seconds >= 0
    assert (result.paper, result.statement) == ("Paper A (2020)", "A is better than B.")
    with pytest.raises(ValueError, match="unknown claim 'nope'"):
        run_claim("nope")
    claim("liar", "p", "s")(lambda s: {"verdict": "holds"})
    with pytest.raises(TypeError, match="not Outcome"):
        run_claim("liar")


def test_results_round_trip_and_page(registry, tmp_path):
    _register_pair()
    settings = ClaimSettings(size="test", out=tmp_path)
    results = [run_claim(n, settings) for n in ("good", "bad")]
    save_results(results, tmp_path, {"size": "test"})
    loaded = load_results(tmp_path)
    assert [r.as_dict() for r in loaded] == [r.as_dict() for r in results]
    assert verdict_counts(loaded) == {"holds": 1, "partly": 1, "does not hold": 0}
    page = write_page(loaded, tmp_path).read_text()
    assert "n=1 &lt;b&gt;" in page and "n=1 <b>" not in page  # escaped
    assert "src='good.png'" in page and "the benchmark is smaller" in page
    assert claims_html(loaded, "assets/").count("src='assets/good.png'") == 1


def _write_claims(folder, entry_changes=None, body_changes=None):
    (folder / "f.png").write_bytes(b"png")
    entry = {
        "name": "x", "paper": "P", "statement": "S", "paper_value": "1", "ours": "1",
        "verdict": "holds", "rule": "r", "why": "", "numbers": {"a": 1.0}, "figure": "f.png",
        "seconds": 1.0,
    }  # fmt: skip
    entry.update(entry_changes or {})
    body = {"format": 1, "meta": {}, "claims": [entry], **(body_changes or {})}
    (folder / RESULTS_FILE).write_text(json.dumps(body))


@pytest.mark.parametrize(
    "entry, body, message",
    [
        ({"verdict": "sure"}, None, "verdict"),
        ({"numbers": {"a": float("nan")}}, None, "numbers"),
        ({"numbers": {"a": True}}, None, "numbers"),
        ({"figure": "../f.png"}, None, "plain file name"),
        ({"figure": "missing.png"}, None, "missing"),
        ({"seconds": -1}, None, "seconds"),
        ({"ours": 3}, None, "strings"),
        (None, {"format": 99}, "format"),
        (None, {"claims": {}}, "list"),
    ],
)
def test_load_validates(tmp_path, entry, body, message):
    _write_claims(tmp_path)
    assert load_results(tmp_path)[0].outcome.figure == "f.png"  # the unchanged file loads
    _write_claims(tmp_path, entry, body)
    with pytest.raises(ValueError, match=message):
        load_results(tmp_path)


def test_load_refuses_missing_and_broken_files(tmp_path):
    with pytest.raises(ValueError, match="captum-ext claims --out"):
        load_results(tmp_path)
    (tmp_path / RESULTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path)


def test_cli_runs_lists_and_reports_failures(registry, tmp_path, capsys):
    _register_pair()

    @claim("boom", "Paper C", "C never fails.")
    def boom(settings):
        raise RuntimeError("experiment broke")

    assert main(["claims", "--out", str(tmp_path), "--list"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "good",
        "bad",
        "boom",
    ]
    assert main(["claims", "--out", str(tmp_path), "--only", "good", "nope"]) == 2
    assert "--only: unknown claim(s) nope" in capsys.readouterr().err
    assert main(["claims", "--out", str(tmp_path / "run"), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "experiment broke" in err and "claim boom failed" in err
    loaded = load_results(tmp_path / "run")
    assert [r.name for r in loaded] == ["good", "bad"]
    assert loaded[0].outcome.numbers["n"] == 1.0  # --quick is the test size
    meta = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())["meta"]
    assert meta["failed"] == "boom" and meta["size"] == "test"


def test_report_section_copies_the_table_and_figures(registry, tmp_path):
    assert claims_section(types.SimpleNamespace(claims_dir=None), tmp_path) is None
    _register_pair()
    src, assets = tmp_path / "claims", tmp_path / "assets"
    src.mkdir()
    assets.mkdir()
    save_results([run_claim(n, ClaimSettings(out=src)) for n in ("good", "bad")], src)
    section = claims_section(types.SimpleNamespace(claims_dir=src), assets)
    assert section.figures == ["good.png"]
    assert (assets / "good.png").read_bytes() == (src / "good.png").read_bytes()
    assert section.json["verdicts"] == {"holds": 1, "partly": 1, "does not hold": 0}
    assert "src='good.png'" in section.html and "B is robust." in section.html


def test_report_refuses_a_bad_claims_folder_before_running(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path / "r"), "--claims", str(tmp_path)]) == 2
    assert "--claims: no claims.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_claim_result_dict_flattens_the_outcome():
    r = ClaimResult("n", "p", "s", _outcome(numbers={"a": 1.0}), 2.0)
    assert r.as_dict() == {
        "name": "n", "paper": "p", "statement": "s", "seconds": 2.0, "paper_value": "0.9 (Table 1)",
        "ours": "0.8", "verdict": "holds", "rule": "ours > 0.5", "why": "", "numbers": {"a": 1.0},
        "figure": None,
    }  # fmt: skip


def test_claim_figure_draws_only_when_a_folder_is_given(tmp_path):
    drawn = []

    def draw(fig):
        drawn.append(fig)
        fig.subplots(1, 2)[0].plot([0, 1], [1, 0])

    assert claim_figure(ClaimSettings(), "a.png", draw, (4, 3)) is None
    assert drawn == []
    out = tmp_path / "new" / "folder"
    name = claim_figure(ClaimSettings(out=out), "a.png", draw, (4, 3), layout="tight")
    assert name == "a.png" and len(drawn) == 1
    assert (out / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
