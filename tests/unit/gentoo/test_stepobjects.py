"""Step objects on a binhost: exported as deterministic tars by one work directory, taken by another whose steps
then never run; a tampered tar, an object made for other inputs, outputs that are not the manifest's and a tar
climbing out with '..' are refused, named, and the step runs here. With the executor's test step kinds."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from clipbuild.core.executor import Executor, Silent
from clipbuild.core.plan import Step
from clipbuild.gentoo import binhost, stepobjects
from tests.unit.core.test_executor import KINDS, RUNS, data, make_plan

KIND_NAMES = ("test-write", "test-concat")


class Recorder(Silent):
    def __init__(self) -> None:
        self.said: list[str] = []

    def step_progress(self, step: Step, message: str) -> None:
        self.said.append(f"{step.id}: {message}")


def publish(folder: Path, workdir: Path) -> stepobjects.ExportedObjects:
    """What `binhost export` does: the objects, then the Packages index recording their index's digest."""
    done = stepobjects.export(folder, stepobjects.latest_objects(workdir, ["test"], KIND_NAMES))
    binhost.export(folder, [], header={stepobjects.HEADER_FIELD: done.index_sha256})
    return done


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Executor]:
    """A binhost folder holding the objects of a first work directory's run of the test plan."""
    RUNS.clear()
    first = Executor(tmp_path / "first", KINDS)
    first.run(make_plan())
    publish(tmp_path / "bh", tmp_path / "first")
    RUNS.clear()
    return tmp_path / "bh", first


def consumer(tmp_path: Path, spec: str) -> tuple[Executor, Recorder]:
    reporter = Recorder()
    source = stepobjects.BinhostObjects(binhost.Remote.parse(spec), reporter.said.append)
    return Executor(tmp_path / "second", KINDS, reporter=reporter, sources=[source]), reporter


def key_of_step(executor: Executor, step_id: str) -> str:
    return executor.output("test", step_id).parent.name


def test_a_second_work_directory_takes_every_step_and_runs_none(published, tmp_path):
    folder, first = published
    second, reporter = consumer(tmp_path, str(folder))
    outcomes = second.run(make_plan())
    assert RUNS == []
    assert [o.status for o in outcomes] == ["cached"] * 4
    assert all(o.reason == f"fetched from the binhost {folder.resolve().as_uri()}/" for o in outcomes)
    assert data(second, "d") == "A|B" and any("fetched from the binhost" in line for line in reporter.said)
    for step in ("a", "b", "c", "d"):
        ours, theirs = second.output("test", step).parent, first.output("test", step).parent
        assert ours.name == theirs.name
        assert (ours / "manifest.json").read_bytes() == (theirs / "manifest.json").read_bytes()
    assert [key for key, problem, _ in second.check_store() if problem] == []
    # Deterministic tars: the second work directory exports byte for byte what the first did.
    again = stepobjects.export(tmp_path / "bh2", stepobjects.latest_objects(tmp_path / "second", ["test"], KIND_NAMES))
    assert again.written == [o.key for o in sorted(outcomes, key=lambda o: o.key)]
    assert (tmp_path / "bh2/objects/index.json").read_bytes() == (folder / "objects/index.json").read_bytes()


def test_export_is_incremental(published, tmp_path):
    folder, _ = published
    index = (folder / "objects/index.json").read_bytes()
    done = publish(folder, tmp_path / "first")
    assert done.written == [] and len(done.kept) == 4
    assert (folder / "objects/index.json").read_bytes() == index
    assert sorted(json.loads(index)["objects"][k]["step"] for k in done.kept) == ["a", "b", "c", "d"]


def test_a_tampered_tar_is_refused_with_its_digest_and_the_step_runs(published, tmp_path):
    folder, first = published
    key = key_of_step(first, "a")
    tar = folder / "objects" / f"{key}.tar"
    blob = bytearray(tar.read_bytes())
    blob[1000] ^= 1
    tar.write_bytes(bytes(blob))
    second, reporter = consumer(tmp_path, str(folder))
    outcomes = second.run(make_plan())
    assert RUNS == ["a"] and [o.status for o in outcomes] == ["ran", "cached", "cached", "cached"]
    [refusal] = [line for line in reporter.said if " refused: " in line]
    assert refusal.startswith(f"a: the binhost {folder.resolve().as_uri()}/: object {key} refused: step a: ")
    assert "SHA256 " in refusal and json.loads((folder / "objects/index.json").read_text())["objects"][key][
        "sha256"] in refusal
    assert data(second, "d") == "A|B"


def republish(folder: Path, workdir: Path, key: str, edit) -> None:
    """The object `key` of `workdir`, edited by `edit(object folder)`, exported again under its key."""
    doctored = workdir.parent / "doctored" / key
    shutil.copytree(workdir / "objects" / key, doctored, symlinks=True)
    edit(doctored)
    (folder / "objects" / f"{key}.tar").unlink()
    done = stepobjects.export(folder, {key: doctored})
    binhost.export(folder, [], header={stepobjects.HEADER_FIELD: done.index_sha256})


def _other_inputs(obj: Path) -> None:
    manifest = json.loads((obj / "manifest.json").read_text())
    manifest["components"]["options"]["text"] = "evil"
    (obj / "manifest.json").write_text(json.dumps(manifest))


def _other_output(obj: Path) -> None:
    (obj / "out/data.txt").write_text("E")  # one byte, as many as the manifest's size


def _extra_output(obj: Path) -> None:
    (obj / "out/extra.sh").write_text("evil")


@pytest.mark.parametrize("edit, problem", [
    (_other_inputs, "its manifest's components hash to "),
    (_other_output, "its outputs are not what its manifest says: out/data.txt was modified"),
    (_extra_output, "out/extra.sh is not in its manifest"),
])
def test_an_object_not_made_from_these_inputs_is_refused(published, tmp_path, edit, problem):
    folder, first = published
    key = key_of_step(first, "a")
    republish(folder, tmp_path / "first", key, edit)
    second, reporter = consumer(tmp_path, str(folder))
    second.run(make_plan())
    assert RUNS == ["a"] and data(second, "a") == "A"
    [refusal] = [line for line in reporter.said if " refused: " in line]
    assert f"object {key} refused: " in refusal and problem in refusal
    assert "the step runs here" in refusal


def test_a_tar_climbing_out_is_refused(published, tmp_path):
    folder, first = published
    key = key_of_step(first, "a")
    tar = folder / "objects" / f"{key}.tar"
    with tarfile.open(tar, "w") as archive:
        for name in (key, f"{key}/manifest.json", f"{key}/../../../evil"):
            info = tarfile.TarInfo(name)
            source = first.objects / key / name.removeprefix(f"{key}")[1:] if name != key else None
            if source is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                payload = source.read_bytes() if source.is_file() else b"escaped"
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    index = json.loads((folder / "objects/index.json").read_text())
    index["objects"][key].update(size=tar.stat().st_size, sha256=hashlib.sha256(tar.read_bytes()).hexdigest())
    text = json.dumps(index).encode()
    binhost.write_atomically(folder / "objects/index.json", text)
    binhost.export(folder, [], header={stepobjects.HEADER_FIELD: hashlib.sha256(text).hexdigest()})
    second, reporter = consumer(tmp_path, str(folder))
    second.run(make_plan())
    assert RUNS == ["a"]
    [refusal] = [line for line in reporter.said if " refused: " in line]
    assert "'..' are refused" in refusal
    assert not list(tmp_path.rglob("evil"))


def test_over_http_on_loopback_with_a_pinned_index(published, tmp_path):
    folder, _ = published
    pin = hashlib.sha256((folder / "Packages").read_bytes()).hexdigest()
    with binhost.served(folder) as url:
        second, _ = consumer(tmp_path, f"{url}#sha256={pin}")
        assert [o.status for o in second.run(make_plan())] == ["cached"] * 4
    assert RUNS == []


def test_an_objects_index_that_is_not_the_packages_one_is_not_used(published, tmp_path):
    folder, _ = published
    index = folder / "objects/index.json"
    index.write_text(index.read_text() + " ")
    second, reporter = consumer(tmp_path, str(folder))
    second.run(make_plan())
    assert sorted(RUNS) == ["a", "b", "c", "d"]
    assert any("objects/index.json has SHA-256" in line and "its Packages index says" in line
               for line in reporter.said)
