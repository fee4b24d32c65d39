"""The file layer (recsys.core.fs) on the local disk and on a remote store (pyarrow's in-memory
``mock://`` file system stands in for HDFS or S3: the same code path, no JVM)."""

import tempfile
import uuid

import pytest

from recsys.core import fs


@pytest.fixture(params=["local", "remote"])
def base(request, tmp_path):
    return str(tmp_path) if request.param == "local" else f"mock:///{uuid.uuid4().hex}"


def test_round_trip_list_rename_delete(base):
    fs.write_text(None, fs.join(base, "d/x/f.json"), "héllo\nworld")
    assert fs.read_text(None, fs.join(base, "d/x/f.json")) == "héllo\nworld"
    assert fs.read_first_line(None, fs.join(base, "d/x/f.json")) == "héllo"
    assert fs.listdir(None, fs.join(base, "d/x")) == ["f.json"]  # no .tmp or .prev left
    assert fs.is_dir(None, fs.join(base, "d")) and not fs.is_dir(None, fs.join(base, "d/x/f.json"))
    fs.rename(None, fs.join(base, "d"), fs.join(base, "e"))
    assert not fs.exists(None, fs.join(base, "d")) and fs.exists(None, fs.join(base, "e/x/f.json"))
    local = fs.copy_to_local(None, fs.join(base, "e"), tempfile.mkdtemp())
    assert open(f"{local}/x/f.json", encoding="utf-8").read() == "héllo\nworld"
    fs.delete(None, fs.join(base, "e"))
    fs.delete(None, fs.join(base, "e"))  # nothing left: no error
    assert not fs.exists(None, fs.join(base, "e"))
    with pytest.raises(FileNotFoundError):
        fs.read_text(None, fs.join(base, "e/x/f.json"))


@pytest.mark.parametrize("crash_at", ["keep-previous", "put-new-in-place", "drop-previous"])
def test_write_text_crash_at_any_step_leaves_old_or_new_text(base, monkeypatch, crash_at):
    """Replacing a file must never leave neither copy: the search state rides on it. Before
    this protocol, a remote store's write deleted the file and then renamed the new one in:
    a crash between the two lost the state."""
    path = fs.join(base, "_searches/key/state.json")
    fs.write_text(None, path, "old")
    real_rename, real_delete = fs.rename, fs.delete

    def rename(spark, src, dst):
        if (crash_at == "keep-previous" and dst.endswith(fs.PREV_SUFFIX)) or \
                (crash_at == "put-new-in-place" and dst == path):
            raise KeyboardInterrupt("killed")
        return real_rename(spark, src, dst)

    def delete(spark, target):
        if crash_at == "drop-previous" and target.endswith(fs.PREV_SUFFIX) and fs.exists(spark, target):
            raise KeyboardInterrupt("killed")
        return real_delete(spark, target)

    monkeypatch.setattr(fs, "rename", rename)
    monkeypatch.setattr(fs, "delete", delete)
    with pytest.raises(KeyboardInterrupt):
        fs.write_text(None, path, "new")
    monkeypatch.undo()
    assert fs.read_text(None, path) == ("new" if crash_at == "drop-previous" else "old")
    fs.write_text(None, path, "newer")  # the next write recovers from whatever was left
    assert fs.read_text(None, path) == "newer"
    left = [n for n in fs.listdir(None, fs.parent(path)) if not n.startswith("state.json.tmp-")]
    assert left == ["state.json"]


def test_unknown_scheme_is_a_named_error():
    with pytest.raises(Exception, match="nosuch://bucket/x: cannot open this file system"):
        fs.exists(None, "nosuch://bucket/x")


def test_scratch_dir_honours_recsys_scratch(monkeypatch):
    monkeypatch.setenv("RECSYS_SCRATCH", "s3://bucket/tmp/")
    assert fs.scratch_dir("model").startswith("s3://bucket/tmp/recsys-model-")
    monkeypatch.delenv("RECSYS_SCRATCH")
    assert fs.is_local(fs.scratch_dir("model"))
