"""The version catalog: one live version at most, repaired from the alias, and no lost updates."""

from __future__ import annotations

import pytest

from pipelines.rag.versions import VersionCatalog

pytestmark = pytest.mark.unit


def test_marking_a_version_live_demotes_every_other_live_record(tmp_path):
    catalog = VersionCatalog(tmp_path / "catalog.json")
    catalog.put("docs_v1", status="live")
    catalog.put("docs_v2", status="live")  # what a crash between switch and record could leave behind
    catalog.mark_live("docs_v3", "docs_v2", reason="test")
    assert catalog.live_versions() == ["docs_v3"]
    assert {catalog.get(v)["status"] for v in ("docs_v1", "docs_v2")} == {"previous"}


def test_the_catalog_follows_the_alias_after_a_crash_between_the_two(tmp_path):
    catalog = VersionCatalog(tmp_path / "catalog.json")
    catalog.put("docs_v1")
    catalog.mark_live("docs_v1", None, reason="first")
    catalog.put("docs_v2", status="approved")
    assert catalog.follow_alias("docs_v2") is True
    assert catalog.live_versions() == ["docs_v2"] and catalog.history == ["docs_v1", "docs_v2"]
    assert catalog.previous_versions("docs_v2") == ["docs_v1"]
    assert catalog.follow_alias("docs_v2") is False, "nothing to repair"
    assert catalog.follow_alias(None) is False


def test_a_stale_catalog_object_does_not_write_back_over_a_newer_change(tmp_path):
    path = tmp_path / "catalog.json"
    build = VersionCatalog(path)  # a long step reads the catalog ...
    build.put("docs_v1", status="live")
    rollback = VersionCatalog(path)
    rollback.put("docs_v0", status="previous")  # ... a rollback records something meanwhile ...
    build.put("docs_v1", gate="passed")  # ... and the step's next change keeps it
    assert set(VersionCatalog(path).versions) == {"docs_v0", "docs_v1"}
