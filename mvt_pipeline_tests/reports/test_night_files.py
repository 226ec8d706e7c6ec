"""Nights are kept in reports/<as_of>/, latest/ follows the newest night only, a re-run replaces
its night whole, a crashed run's leftovers go, and symlinks are refused."""

import datetime as dt
import os

import pytest

from mvt_pipeline.reports.night_files import kept_nights, page_path, publish_night

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def pages(tag: str) -> dict[str, str]:
    return {"a.html": f"a {tag}", "index.html": f"index {tag}"}


def root_index(nights):
    return "nights " + ",".join(n.isoformat() for n in nights)


def test_every_night_is_kept_and_latest_is_the_newest(tmp_path):
    publish_night(tmp_path, D1, pages("one"), root_index)
    published = publish_night(tmp_path, D2, pages("two"), root_index)
    assert published.latest and published.pages[-1].name == "index.html"
    assert kept_nights(tmp_path) == [D1, D2]
    assert (tmp_path / "2026-11-01" / "a.html").read_text() == "a one"
    assert (tmp_path / "latest" / "a.html").read_text() == "a two"
    assert (tmp_path / "index.html").read_text() == "nights 2026-11-02,2026-11-01"
    assert page_path(tmp_path, D2, "a.html") == tmp_path / "2026-11-02" / "a.html"


def test_a_backfill_keeps_latest_and_a_rerun_replaces_its_night_whole(tmp_path):
    publish_night(tmp_path, D3, {"a.html": "a three", "b.html": "b three", "index.html": "i"}, root_index)
    backfill = publish_night(tmp_path, D1, pages("one"), root_index)
    assert not backfill.latest and (tmp_path / "latest" / "a.html").read_text() == "a three"
    publish_night(tmp_path, D3, pages("three again"), root_index)  # b.html no longer exists that night
    assert sorted(p.name for p in (tmp_path / "2026-11-03").iterdir()) == ["a.html", "index.html"]
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["a.html", "index.html"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_crashed_run_leaves_the_previous_night_and_is_cleaned_next_time(tmp_path, monkeypatch):
    publish_night(tmp_path, D1, pages("one"), root_index)
    (tmp_path / ".2026-11-02.999.tmp").mkdir()  # what a killed run leaves behind
    (tmp_path / ".2026-11-02.999.tmp" / "a.html").write_text("half")

    def boom(nights):
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError):
        publish_night(tmp_path, D2, pages("two"), boom)
    assert (tmp_path / "index.html").read_text() == "nights 2026-11-01"  # the old index stays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("bad", ["../x.html", "a/b.html", "x.txt", ".hidden.html"])
def test_page_names_must_be_plain_html_files(tmp_path, bad):
    with pytest.raises(ValueError):
        publish_night(tmp_path, D1, {bad: "x"})


def test_symlinked_night_or_reports_dir_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    reports = tmp_path / "reports"
    reports.mkdir()
    os.symlink(target, reports / "2026-11-01")
    with pytest.raises(ValueError, match="symlink"):
        publish_night(reports, D1, pages("one"))
    os.symlink(target, tmp_path / "linked")
    with pytest.raises(ValueError, match="symlink"):
        publish_night(tmp_path / "linked", D1, pages("one"))
    assert list(target.iterdir()) == []
