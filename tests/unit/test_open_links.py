"""`labelflow open` without a server: the local copy fetches only what changed and stays inside its folder, the
newest run is found, and every failure is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.tasks.links import (
    MIRROR_MANIFEST,
    LinkNotFound,
    docs_link,
    latest_folder,
    mirror_folder,
    report_link,
)
from labelflow.tasks.spec import parse_spec
from tests.unit.fakes import FakeObjectStore

BUCKET = "state"
SPEC = {
    "name": "Open me",
    "source": "s3://raw/texts/",
    "state": f"s3://{BUCKET}/projects/open-me/",
    "task": "text-classification",
    "labels": ["a", "b"],
}


class FolderStore(FakeObjectStore):
    """The fake store plus S3's delimiter listing, counting downloads."""

    def __init__(self) -> None:
        super().__init__()
        self.downloads: list[str] = []
        self.folder_listings: list[str] = []  # the start_after of each folder listing

    def list_folders(self, bucket: str, prefix: str = "", start_after: str = "") -> Iterator[str]:
        self.folder_listings.append(start_after)
        folders = {
            prefix + key[len(prefix) :].split("/", 1)[0] + "/"
            for key in self.keys(bucket, prefix)
            if "/" in key[len(prefix) :]
        }
        yield from sorted(folder for folder in folders if folder > start_after)

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        self.downloads.append(key)
        super().download_file(bucket, key, path)


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MIRROR_MANIFEST
    }


def test_the_copy_fetches_only_changed_files_and_removes_stale_ones(tmp_path: Path) -> None:
    store = FolderStore()
    store.put_object(BUCKET, "docs/index.html", b"<a href='validations/x.html'>run</a>")
    store.put_object(BUCKET, "docs/static/style.css", b"body{}")
    store.put_object(BUCKET, "docs/validations/x.html", b"x")
    local = tmp_path / "copy"

    first = mirror_folder(store, BUCKET, "docs", local)
    assert (first.downloaded, first.unchanged, first.removed) == (3, 0, 0)
    assert files_under(local) == {
        "index.html": b"<a href='validations/x.html'>run</a>",
        "static/style.css": b"body{}",
        "validations/x.html": b"x",
    }

    store.downloads.clear()
    again = mirror_folder(store, BUCKET, "docs", local)
    assert (again.downloaded, again.unchanged, again.removed) == (0, 3, 0)
    assert store.downloads == []

    store.put_object(BUCKET, "docs/index.html", b"<a href='validations/y.html'>run</a>")
    store.delete(BUCKET, "docs/validations/x.html")
    store.put_object(BUCKET, "docs/validations/y.html", b"y")
    changed = mirror_folder(store, BUCKET, "docs", local)
    assert (changed.downloaded, changed.unchanged, changed.removed) == (2, 1, 1)
    assert sorted(store.downloads) == ["docs/index.html", "docs/validations/y.html"]
    assert files_under(local) == {
        "index.html": b"<a href='validations/y.html'>run</a>",
        "static/style.css": b"body{}",
        "validations/y.html": b"y",
    }


def test_a_local_file_changed_by_hand_is_fetched_again(tmp_path: Path) -> None:
    store = FolderStore()
    store.put_object(BUCKET, "docs/index.html", b"original")
    local = tmp_path / "copy"
    mirror_folder(store, BUCKET, "docs", local)
    (local / "index.html").write_bytes(b"truncated by a crash, or edited")
    assert mirror_folder(store, BUCKET, "docs", local).downloaded == 1
    assert (local / "index.html").read_bytes() == b"original"


def test_keys_that_would_land_outside_the_copy_and_parquet_tables_are_left_out(tmp_path: Path) -> None:
    store = FolderStore()
    store.put_object(BUCKET, "run/report.html", b"report")
    store.put_object(BUCKET, "run/../escape.html", b"outside")
    store.put_object(BUCKET, "run//absolute.html", b"outside")
    store.put_object(BUCKET, "run/consensus.parquet", b"PAR1")
    store.put_object(BUCKET, f"run/{MIRROR_MANIFEST}", b"{}")
    local = tmp_path / "nested" / "copy"
    mirror_folder(store, BUCKET, "run", local, skip_suffixes=(".parquet",))
    assert files_under(tmp_path) == {"nested/copy/report.html": b"report"}


def test_a_copy_larger_than_the_bound_is_refused_before_anything_is_fetched(tmp_path: Path) -> None:
    store = FolderStore()
    store.put_object(BUCKET, "docs/index.html", b"x" * 600)
    store.put_object(BUCKET, "docs/big.js", b"x" * 600)
    with pytest.raises(LinkNotFound, match="1,200 bytes, more than the 1,000"):
        mirror_folder(store, BUCKET, "docs", tmp_path / "copy", max_bytes=1000)
    assert store.downloads == []


def test_the_newest_run_with_the_page_is_chosen_listing_only_recent_runs_when_there_are_some() -> None:
    store = FolderStore()
    store.put_object(BUCKET, "reports/20260101T000000000000Z/report.html", b"old")
    store.put_object(BUCKET, "reports/20260301T000000000000Z/report.html", b"new")
    # The newest run is still being written: no page yet.
    store.put_object(BUCKET, "reports/20260302T000000000000Z/metrics.json", b"{}")
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert latest_folder(store, BUCKET, "reports", "report.html", now) == "reports/20260301T000000000000Z/"
    assert store.folder_listings == ["reports/20260301"]  # runs since yesterday: the older ones are not listed

    store.folder_listings.clear()
    months_later = datetime(2026, 6, 1, tzinfo=UTC)
    assert latest_folder(store, BUCKET, "reports", "report.html", months_later) == "reports/20260301T000000000000Z/"
    assert store.folder_listings == ["reports/20260531", ""]
    assert latest_folder(store, BUCKET, "nothing", "report.html") is None


def test_report_and_docs_links_copy_the_latest_run_under_the_cache(tmp_path: Path) -> None:
    store = FolderStore()
    spec = parse_spec(SPEC)
    base = "projects/open-me"
    store.put_object(BUCKET, f"{base}/collect/reports/20260101T000000000000Z/report.html", b"old")
    store.put_object(BUCKET, f"{base}/collect/reports/20260102T000000000000Z/report.html", b"new")
    store.put_object(BUCKET, f"{base}/collect/reports/20260102T000000000000Z/consensus.parquet", b"PAR1")
    store.put_object(BUCKET, f"{base}/validation/20260102T000000000000Z/result.json", b"{}")
    store.put_object(BUCKET, f"{base}/validation/20260102T000000000000Z/docs/index.html", b"docs")

    report = report_link(store, spec, tmp_path)
    assert report.run == "20260102T000000000000Z" and report.path is not None
    assert Path(report.path).read_bytes() == b"new" and report.url == Path(report.path).as_uri()
    assert Path(report.path).parent == tmp_path / "reports" / spec.slug
    assert not (Path(report.path).parent / "consensus.parquet").exists()

    docs = docs_link(store, spec, tmp_path)
    assert docs.path == str(tmp_path / "docs" / spec.slug / "index.html")
    assert docs.source == f"s3://{BUCKET}/{base}/validation/20260102T000000000000Z/docs/"
    assert files_under(tmp_path / "docs" / spec.slug) == {"index.html": b"docs"}


# --- the command's error lines ---------------------------------------------------------------------------------
@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "open-me.yaml"
    path.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    return path


@pytest.fixture
def fake_stack(monkeypatch: pytest.MonkeyPatch) -> FolderStore:
    """Resources.from_settings hands out the fake store (Label Studio and MLflow are never reached)."""
    store = FolderStore()
    store.ensure_bucket(BUCKET)
    fake = SimpleNamespace(store=store, close=lambda: None)
    monkeypatch.setattr("labelflow.integrations.resources.Resources.from_settings", lambda **_: fake)
    return store


def run_open(*args: str) -> SimpleNamespace:
    result = CliRunner().invoke(app, ["open", *args])
    return SimpleNamespace(code=result.exit_code, out=result.stdout, err=result.stderr)


def assert_one_error_line(err: str, starts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), err
    assert "Traceback" not in err


def test_a_missing_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_open(str(tmp_path / "nope.yaml"), "report")
    assert result.code == 2 and result.out == ""
    assert_one_error_line(result.err, "spec: ")
    assert "no such spec file" in result.err


def test_an_unknown_target_is_refused_by_the_argument_parser(spec_file: Path) -> None:
    assert run_open(str(spec_file), "everything").code == 2


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("report", "no quality report yet for 'Open me': run `labelflow collect"),
        ("docs", "no Data Docs yet for 'Open me'"),
        ("project", "no Label Studio project recorded for 'Open me'"),
        ("dataset", "'Open me' publishes no dataset: its spec has no `dataset` section"),
        ("quarantine", "no ingest run recorded for 'Open me': run `labelflow ingest"),
    ],
)
def test_nothing_to_open_yet_is_one_line_naming_the_command_to_run(
    spec_file: Path, fake_stack: FolderStore, target: str, expected: str
) -> None:
    result = run_open(str(spec_file), target)
    assert result.code == 1 and result.out == ""
    assert_one_error_line(result.err, "open: ")
    assert expected in result.err


def test_with_json_a_failure_is_one_json_object_on_stdout(spec_file: Path, fake_stack: FolderStore) -> None:
    result = run_open(str(spec_file), "report", "--json")
    assert result.code == 1
    error = json.loads(result.out)["error"]
    assert error["kind"] == "open" and error["exit_code"] == 1
    assert error["message"].startswith("no quality report yet for 'Open me'")
    assert_one_error_line(result.err, "open: ")


def test_with_json_a_link_is_one_json_object(spec_file: Path, fake_stack: FolderStore, tmp_path: Path) -> None:
    fake_stack.put_object(BUCKET, "projects/open-me/collect/reports/20260101T000000000000Z/report.html", b"r")
    result = run_open(str(spec_file), "report", "--json", "--cache", str(tmp_path / "cache"))
    assert result.code == 0, result.err
    link = json.loads(result.out)
    assert link["target"] == "report" and link["downloaded"] == 1
    assert Path(link["path"]).read_bytes() == b"r" and link["url"].startswith("file://")


def test_without_json_stdout_is_the_url_alone(spec_file: Path, fake_stack: FolderStore, tmp_path: Path) -> None:
    fake_stack.put_object(BUCKET, "projects/open-me/collect/reports/20260101T000000000000Z/report.html", b"r")
    result = run_open(str(spec_file), "report", "--cache", str(tmp_path / "cache"))
    assert result.code == 0, result.err
    expected = (tmp_path / "cache" / "reports" / parse_spec(SPEC).slug / "report.html").as_uri()
    assert result.out == expected + "\n"
    assert "1 files downloaded, 0 unchanged" in result.err


def test_a_stack_that_is_down_is_one_line(spec_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing listens on port 9 (discard): the object store cannot be reached.
    monkeypatch.setenv("LABELFLOW_HOME", str(tmp_path / "no-stack"))
    monkeypatch.setenv("LABELFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LABELFLOW_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("LABELFLOW_S3_SECRET_KEY", "s")
    result = run_open(str(spec_file), "report")
    assert result.code == 1 and result.out == ""
    assert_one_error_line(result.err, "open: ")
    assert "cannot reach the object store at http://127.0.0.1:9" in result.err


def test_without_a_stack_or_settings_it_says_what_to_set(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LABELFLOW_HOME", str(tmp_path / "no-stack"))
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("LABELFLOW_S3_ENDPOINT_URL", "LABELFLOW_S3_ACCESS_KEY", "LABELFLOW_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = run_open(str(spec_file), "docs")
    assert result.code == 2 and result.out == ""
    assert_one_error_line(result.err, "configuration: object store settings")
