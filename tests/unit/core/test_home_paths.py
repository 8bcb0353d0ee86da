"""Paths read back from XComs, Asset extras and lineage: inside the data home or refused (``..``, absolute, links)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core.errors import NotRetryable
from pipelines.core.home import DataHome, PathOutsideDataHome
from pipelines.core.settings import LooplineSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def home(tmp_path) -> DataHome:
    root = tmp_path / "home"
    (root / "training" / "churn").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.parquet").write_text("not Loopline's")
    return DataHome(LooplineSettings(home=root))


def test_a_path_under_the_home_is_accepted_resolved(home):
    inside = home.root / "training" / "churn" / "x" / ".." / "training_set.parquet"
    assert home.contains(inside)
    assert home.require_inside(inside, "XCom build_training_set.path") == \
        (home.root / "training" / "churn" / "training_set.parquet").resolve()
    assert home.contains(home.root / "not-yet-written.parquet")  # a path need not exist to be inside


@pytest.mark.parametrize("relative", ["../elsewhere/secret.parquet", "training/../../elsewhere/secret.parquet"])
def test_dot_dot_out_of_the_home_is_refused(home, relative):
    path = str(home.root) + "/" + relative
    assert not home.contains(path)
    with pytest.raises(PathOutsideDataHome, match=r"XCom build_training_set.path is '.*elsewhere/secret.parquet' "
                                                   r"\(.*elsewhere/secret.parquet\), outside the data home .*home: "
                                                   r"refusing to read or write it"):
        home.require_inside(path, "XCom build_training_set.path")


def test_absolute_and_relative_paths_elsewhere_are_refused(home, tmp_path):
    for path in ["/etc/passwd", str(tmp_path / "elsewhere" / "secret.parquet"), "training/churn/a.parquet"]:
        assert not home.contains(path), path
        with pytest.raises(PathOutsideDataHome, match="XCom plan_index.plan_path is"):
            home.require_inside(path, "XCom plan_index.plan_path")
    assert issubclass(PathOutsideDataHome, NotRetryable)  # a retry reads the same XCom


def test_a_symlink_inside_the_home_that_points_out_is_refused_and_one_that_stays_in_is_not(home, tmp_path):
    link_out = home.root / "training" / "churn" / "link.parquet"
    link_out.symlink_to(tmp_path / "elsewhere" / "secret.parquet")
    folder_out = home.root / "training" / "linked"
    folder_out.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for path in (link_out, folder_out / "secret.parquet"):
        with pytest.raises(PathOutsideDataHome, match=r"elsewhere/secret.parquet\), outside the data home"):
            home.require_inside(path, "the training-set input of churn v1")

    target = home.root / "training" / "churn" / "real.parquet"
    target.write_text("data")
    link_in = home.root / "predictions.parquet"
    link_in.symlink_to(target)
    assert home.require_inside(link_in, "XCom") == target.resolve()


def test_a_home_reached_through_a_symlink_still_contains_its_paths(tmp_path, home):
    alias = tmp_path / "home-alias"
    alias.symlink_to(home.root, target_is_directory=True)
    through_alias = DataHome(LooplineSettings(home=alias))
    assert through_alias.contains(home.root / "training" / "churn")
    assert through_alias.contains(alias / "training" / "churn")
    assert not through_alias.contains(Path(tmp_path) / "elsewhere")
