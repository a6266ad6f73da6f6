"""Training's output folder, with real faults: one run owns it (a second run at once is
refused naming the first; a lock of a killed run is taken over), a fresh run never
replaces an earlier run's checkpoint unless asked, a run killed with SIGKILL resumes with
no log row twice and no temporary file left, a full disk at a checkpoint save says so and
keeps the previous checkpoint, checkpoints follow the umask, and a corrupt training image
is reported before the first step instead of crashing the step that reads it."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from deformgan import checkpoint as C
from deformgan import engine as E
from deformgan.outputs import LOCK_NAME, OutputBusy, OutputExists, OutputLock

from test_train import ROOT, cfg, data  # noqa: F401 - the shared tiny config and data fixture


def _hold_lock_in_a_child(folder):
    """A child process that takes the folder's lock and waits for its stdin to close."""
    code = ("import sys; from deformgan.outputs import OutputLock\n"
            f"lock = OutputLock({str(folder)!r}, 'evaluate').acquire()\n"
            "print('held', flush=True); sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_run_into_a_held_folder_is_refused_naming_the_first(data, tmp_path):
    out = tmp_path / "run"
    child = _hold_lock_in_a_child(out)
    try:
        with pytest.raises(OutputBusy) as err:
            E.train(cfg(data, out, steps=1), progress=False)
        assert f"another run is writing to {out}: pid {child.pid} (evaluate: " in str(err.value)
        assert not (out / "checkpoint.pt").exists()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    # the holder killed: its lock is taken over
    child = _hold_lock_in_a_child(out)
    child.kill()
    child.wait(timeout=60)
    assert (out / LOCK_NAME).exists()
    assert E.train(cfg(data, out, steps=1), progress=False)["step"] == 1
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_a_fresh_run_never_replaces_a_checkpoint_unless_asked(data, tmp_path):
    out = tmp_path / "run"
    E.train(cfg(data, out, steps=2, sample_every=2), progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(OutputExists) as err:
        E.train(cfg(data, out, steps=3), progress=False)
    assert str(err.value) == (f"{out} holds the checkpoint of an earlier run ({out / 'checkpoint.pt'}): --resume to "
                              "continue it, --overwrite to start afresh there (it is replaced), or another --out")
    assert (out / "checkpoint.pt").read_bytes() == before and (out / "log.csv").exists()
    assert E.train(cfg(data, out, steps=3), resume="auto", progress=False)["step"] == 3  # resume: allowed
    E.train(cfg(data, out, steps=1, sample_every=1000), progress=False, overwrite=True)
    assert C.load(str(out / "checkpoint.pt"))["step"] == 1
    assert os.listdir(out / "samples") == ["step_000001.png"]  # the earlier run's grids are gone
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1]


def test_killed_with_sigkill_then_resumed_no_log_row_twice_and_no_temporary_left(data, tmp_path):
    out = tmp_path / "run"
    conf = tmp_path / "c.json"
    options = dict(cfg(data, out, steps=400, save_every=3, log_every=1).__dict__)
    conf.write_text(json.dumps({k: v for k, v in options.items() if k != "image_size"}))
    child = subprocess.Popen([sys.executable, "-m", "deformgan.train", "--config", str(conf), "--no-amp"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # past a checkpoint, between two others
            rows = log.read_text().splitlines() if log.exists() else []
            if len(rows) >= 8 and len(rows) % 3 != 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the training did not log 8 steps in time")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    (out / ".tmp-killed.pt").write_bytes(b"half a checkpoint")  # as a kill during a save leaves
    logged = [json.loads(x)["step"] for x in log.read_text().splitlines() if x.endswith("}")]
    saved = C.load(str(out / "checkpoint.pt"))["step"]
    assert max(logged) >= saved >= 3  # the log is never behind the checkpoint
    final = saved + 2
    E.train(cfg(data, out, steps=final, save_every=3, log_every=1), resume="auto", progress=False)
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == list(range(1, final + 1))
    with open(out / "log.csv") as fh:
        assert [int(r.split(",")[0]) for r in fh.read().splitlines()[1:]] == list(range(1, final + 1))
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")] and not (out / LOCK_NAME).exists()


def test_a_full_disk_at_a_checkpoint_save_says_so_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    C.save_atomic({"format": C.FORMAT, "step": 1}, str(path))
    before = path.read_bytes()

    def full(obj, fh):
        fh.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(C.torch, "save", full)
    with pytest.raises(C.CheckpointError) as err:
        C.save_atomic({"format": C.FORMAT, "step": 2}, str(path))
    assert str(err.value).startswith(f"cannot write {path}: the disk is full (")
    assert str(err.value).endswith("; the previous checkpoint is kept")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pt"]

    def internal(obj, fh):  # torch's own writer fails with an internal message
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
    monkeypatch.setattr(C.torch, "save", internal)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(C.CheckpointError, match=r"the disk is full \(0 bytes free in "):
        C.save_atomic({"format": C.FORMAT, "step": 2}, str(path))


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        C.save_atomic({"format": C.FORMAT}, str(tmp_path / "a.pt"))
        os.umask(0o077)
        C.save_atomic({"format": C.FORMAT}, str(tmp_path / "b.pt"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o600


def test_a_corrupt_training_image_is_reported_before_the_first_step(data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    images = copy / "bounding_box_train"
    victim = sorted(os.listdir(images))[0]
    (images / victim).write_bytes(b"not a jpeg")
    result = E.train(cfg(str(copy), tmp_path / "run", steps=2), progress=False)
    assert result["step"] == 2
    err = capsys.readouterr().err
    assert "[deformgan.train] WARNING: 1 missing or unreadable training image(s)" in err
    assert f"cannot read image {images / victim}" in err
    for name in os.listdir(images):  # every image broken: an error before any step
        with open(images / name, "wb") as fh:
            fh.write(b"broken")
    with pytest.raises(FileNotFoundError, match="no training pair left"):
        E.train(cfg(str(copy), tmp_path / "run2", steps=2), progress=False)


def test_the_lock_records_its_owner_and_refuses_the_same_process_twice(tmp_path):
    with OutputLock(str(tmp_path), "train") as lock:
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "train"
        with pytest.raises(OutputBusy, match="already held by this process"):
            OutputLock(str(tmp_path), "evaluate").acquire()
        assert lock.held
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_output_path_that_cannot_be_written_is_refused_before_the_work(data, tmp_path, capsys):
    from deformgan import train as T
    (tmp_path / "file").write_text("a file where the run's folder belongs")
    code = T.main(["--data", data, "--out", str(tmp_path / "file"), "--steps", "1", "--width-mult", "0.0625"])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {tmp_path / 'file'}: cannot write there" in err and "Traceback" not in err


def test_a_resume_on_other_training_pairs_is_refused(data, tmp_path):
    """The checkpoint records the digest of its training pairs: resuming it on another
    pairs file (or another dataset) is refused instead of training on in a mixed plan."""
    from deformgan.data.market import read_annotations, standard_pairs, write_pairs
    out = tmp_path / "run"
    E.train(cfg(data, out, steps=1), progress=False)
    assert len(C.load(str(out / "checkpoint.pt"))["pairs_sha256"]) == 64
    pairs = standard_pairs(read_annotations(os.path.join(data, "annotations-train.csv")))
    other = tmp_path / "pairs.csv"
    write_pairs(str(other), pairs[::-1])  # the same pairs in another order: another plan
    with pytest.raises(C.CheckpointError, match="it was trained on other training pairs"):
        E.train(cfg(data, out, steps=2, pairs=str(other)), resume="auto", progress=False)
    assert E.train(cfg(data, out, steps=2), resume="auto", progress=False)["step"] == 2  # the same: fine
