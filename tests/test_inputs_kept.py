"""Nothing a command is given is lost or silently misread: outputs that would delete or change an input,
paths that are not regular files, flags that do not apply, resumes on other data, and refusals that leave
nothing behind (issue 30's sweep of bad inputs, each case a test)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from helpers.own_data import write_shape_folder
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vaediff import checks
from vaediff.errors import RunError
from vaediff.evaluate import evaluate_run
from vaediff.families import train_run
from vaediff.intervals import enclosing, within_range
from vaediff.quickstart import STATE_FILE, QuickstartPlan, _resumed_study
from vaediff.runs import atomic_write_bytes, prepare_output_dir, write_run_config

SMALL_VAE = {"model": {"hidden": 32, "latent": 4}}
# one worker builds the evaluated `study` once for the whole module (under pytest-xdist --dist loadgroup)
pytestmark = pytest.mark.xdist_group("inputs_kept")


def fingerprint(directory: Path) -> dict[str, str]:
    """Every file under `directory` and a hash of its bytes: equal fingerprints, nothing changed."""
    return {str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def study(tmp_path_factory, evaluator_cache):
    """A folder holding two evaluated VAE runs, as a quickstart study holds its runs."""
    root = tmp_path_factory.mktemp("study")
    write_run_config(root, "quickstart", {"runs": ["a", "b"]})
    for name, seed in (("a", 0), ("b", 1)):
        train_run("vae", root / name, options=SMALL_VAE, train_options={"max_steps": 5, "seed": seed},
                  progress=False, figures=False)
        evaluate_run(root / name, n_samples=20, iw_samples=2, progress=False)
    return root


# ---------------------------------------------------------------------------------------------------------
# Outputs that would delete or change an input


@pytest.mark.parametrize("where", ["run", "study", "inside run"])
def test_compare_never_deletes_or_writes_into_its_inputs(cli, study, where):
    before = fingerprint(study)
    out = {"run": study / "a", "study": study, "inside run": study / "a" / "report"}[where]
    code, _, err = cli("compare", study / "a", study / "b", "--out", out, "--overwrite", "--no-curves")
    assert_one_line_error(code, err, "choose a place outside it")
    assert fingerprint(study) == before


def test_overwrite_replaces_only_a_directory_of_the_same_kind(cli, study, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(study / "a", other)  # a training run that is not an input of the compare
    before = fingerprint(other)
    code, _, err = cli("compare", study / "a", study / "b", "--out", other, "--overwrite", "--no-curves")
    assert_one_line_error(code, err, "'train'", "choose another --out")
    assert fingerprint(other) == before
    report = tmp_path / "report"
    assert cli("compare", study / "a", study / "b", "--out", report, "--no-curves")[0] == 0
    code, _, err = cli("compare", study / "a", study / "b", "--out", report, "--overwrite", "--no-curves")
    assert code == 0, err  # a report replaces a report
    code, _, err = cli("train", "vae", "--out", other, "--overwrite", "--max-steps", "1", "--model-config",
                       json.dumps(SMALL_VAE["model"]))
    assert code == 0, err  # and a training run a training run
    code, _, err = cli("train", "vae", "--out", report, "--overwrite", "--max-steps", "1")
    assert_one_line_error(code, err, "'compare'")


def test_nothing_is_nested_in_an_output_and_overwrite_spares_what_is_not_its_own(cli, study, tmp_path):
    report = tmp_path / "report"
    assert cli("compare", study / "a", study / "b", "--out", report, "--no-curves")[0] == 0
    code, _, err = cli("train", "vae", "--out", report / "run", "--max-steps", "1")
    assert_one_line_error(code, err, "lies inside the vaediff 'compare' directory")
    own = tmp_path / "study"  # a study lists its own runs; one trained into it by hand is not one of them
    own.mkdir()
    write_run_config(own, "quickstart", {}, outputs=["vae"])
    for name in ("vae", "mine"):
        shutil.copytree(study / "a", own / name)
    before = fingerprint(own)
    with pytest.raises(RunError, match="mine, which is not its own"):
        prepare_output_dir(own, overwrite=True, kind="quickstart")
    assert fingerprint(own) == before
    shutil.rmtree(own / "mine")
    prepare_output_dir(own, overwrite=True, kind="quickstart")
    assert not any(own.iterdir())


def test_overwrite_through_a_link_replaces_its_target_and_keeps_the_link(cli, study, tmp_path):
    report, link = tmp_path / "report", tmp_path / "link"
    assert cli("compare", study / "a", study / "b", "--out", report, "--no-curves")[0] == 0
    link.symlink_to(report)
    code, _, err = cli("compare", study / "a", study / "b", "--out", link, "--overwrite", "--no-curves")
    assert code == 0, err
    assert link.is_symlink() and (report / "report.md").is_file()


@pytest.mark.parametrize("where", ["other run", "inside data", "inside run", "a report"])
def test_evaluate_out_is_neither_another_output_nor_an_input(cli, study, shapes, tmp_path, where):
    report = tmp_path / "report"
    if where == "a report":
        assert cli("compare", study / "a", study / "b", "--out", report, "--no-curves")[0] == 0
    run = shapes.parent / "run"
    out = {"other run": study / "b", "inside data": shapes / "c0", "inside run": run / "m", "a report": report}[where]
    before = [fingerprint(d) for d in (study, shapes, run)]
    code, _, err = cli("evaluate", run, "--n-samples", "20", "--out", out)
    assert_one_line_error(code, err)
    assert [fingerprint(d) for d in (study, shapes, run)] == before


def test_the_same_run_given_twice_is_refused(cli, study, tmp_path):
    code, _, err = cli("compare", study / "a", f"{study / 'a'}/", "--out", tmp_path / "r", "--no-curves")
    assert_one_line_error(code, err, "given twice")
    assert not (tmp_path / "r").exists()


def test_a_run_inside_its_data_source_is_refused(cli, tmp_path):
    data = write_shape_folder(tmp_path / "shapes", classes=2, per_class=10)
    before = fingerprint(data)
    code, _, err = cli("train", "vae", "--dataset", data, "--out", data / "myrun", "--max-steps", "1",
                       "--batch-size", "8")
    assert_one_line_error(code, err, "lies inside the data set")
    code, _, err = cli("eda", "--dataset", data, "--out", data / "eda")
    assert_one_line_error(code, err, "lies inside the data set")
    assert fingerprint(data) == before


# ---------------------------------------------------------------------------------------------------------
# Output files that are not regular files


def test_a_device_is_refused_and_a_link_is_written_through(cli, study, tmp_path):
    code, _, err = cli("sample", study / "a", "--out", "/dev/null", "--n", "4")
    assert_one_line_error(code, err, "not a regular file")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    target, link = tmp_path / "target.png", tmp_path / "link.png"
    link.symlink_to(target)  # dangling: the write creates its target
    assert cli("sample", study / "a", "--out", link, "--n", "4")[0] == 0
    assert link.is_symlink() and target.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "to_dir.png").symlink_to(tmp_path)
    code, _, err = cli("sample", study / "a", "--out", tmp_path / "to_dir.png", "--n", "4")
    assert_one_line_error(code, err, "directory")


def test_atomic_write_refuses_what_it_would_replace(tmp_path):
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "s"))
        with pytest.raises(RunError, match="not a regular file"):
            atomic_write_bytes(tmp_path / "s", b"x")
        assert stat.S_ISSOCK(os.stat(tmp_path / "s").st_mode)


def test_a_failed_write_says_whether_a_previous_version_exists(tmp_path, monkeypatch):
    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RunError, match="no space left on device; nothing was written"):
        atomic_write_bytes(tmp_path / "new.json", b"{}")
    (tmp_path / "old.json").write_bytes(b"{}")
    with pytest.raises(RunError, match="previous version of the file is intact"):
        atomic_write_bytes(tmp_path / "old.json", b"[]")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_read_only_mount_is_called_that(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "_read_only", lambda directory: True)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(RunError, match="read-only file system"):
        checks.output_file(tmp_path / "g.png")


BAD_OUTPUTS = ["/dev/null", "/dev/zero", "dir", "link to dir", "link to device", "run", "inside run", "study",
               "run's config", "data set", "inside data set"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small image folder, and a run trained on it (sample's inputs: the run, and the run's data)."""
    data = write_shape_folder(tmp_path_factory.mktemp("data") / "shapes", classes=2, per_class=10, size=28)
    train_run("vae", data.parent / "run", str(data), options=SMALL_VAE,
              train_options={"max_steps": 1, "batch_size": 8}, progress=False, figures=False)
    return data


def bad_output(kind: str, run: Path, study: Path, scratch: Path, data: Path) -> Path:
    """A path of `kind` that no command may write (or replace) as its --out."""
    links = {"link to dir": scratch, "link to device": Path("/dev/null")}
    if kind in links:
        path = scratch / f"{kind.replace(' ', '_')}.png"
        if not path.is_symlink():
            path.symlink_to(links[kind])
        return path
    if kind == "dir":  # not empty, and not written by vaediff: never deleted
        (scratch / "notes.txt").write_text("mine")
    return {"dir": scratch, "run": run, "inside run": run / "x.png", "study": study,
            "run's config": run / "config.json", "data set": data,
            "inside data set": data / "c0" / "new.png"}.get(kind, Path(kind))


def command_writing(command: str, path: Path, study: Path, data: Path) -> tuple[list, Path]:
    """The command line that writes `path`, and the run it reads (or a run beside it)."""
    sampled = data.parent / "run"
    return {"sample": (["sample", sampled, "--out", path, "--n", "4"], sampled),
            "compare": (["compare", study / "a", study / "b", "--out", path, "--overwrite", "--no-curves"], study / "a"),
            "eda": (["eda", "--dataset", data, "--out", path, "--overwrite"], study / "a"),
            "train": (["train", "vae", "--dataset", data, "--out", path, "--overwrite", "--max-steps", "1",
                       "--batch-size", "8"], study / "a")}[command]


@pytest.mark.parametrize("kind, command", [(kind, command) for kind in BAD_OUTPUTS
                                           for command in ("sample", "compare", "eda", "train")
                                           # train may replace a run; the compared runs are not on `shapes`
                                           if (kind, command) not in (("run", "train"), ("inside data set", "compare"))])
def test_every_bad_output_is_refused_in_one_line_and_inputs_kept(cli, study, shapes, tmp_path, kind, command):
    """Devices, directories, links to either, a run, a file or folder inside a run, the study that holds
    the compared runs, the data set or a file inside it: refused by every command, nothing changed."""
    run = command_writing(command, tmp_path, study, shapes)[1]
    path = bad_output(kind, run, study, tmp_path, shapes)
    args, _ = command_writing(command, path, study, shapes)
    before = [fingerprint(d) for d in (study, shapes, shapes.parent / "run")]
    code, _, err = cli(*args)
    assert_one_line_error(code, err)
    assert [fingerprint(d) for d in (study, shapes, shapes.parent / "run")] == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inside=st.sampled_from(["run", "data set"]),
       name=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12),
       command=st.sampled_from(["sample", "compare", "eda", "train"]))
def test_fuzz_no_output_lands_inside_a_run_or_the_data(cli, study, shapes, inside, name, command):
    """Names drawn inside a training run or inside the data set a command reads: every command refuses."""
    assume(not (command == "compare" and inside == "data set"))  # compare reads runs, not that folder
    run = command_writing(command, Path("x"), study, shapes)[1]
    folder = {"run": run, "data set": shapes}[inside]
    path = folder / (f"{name}.png" if command == "sample" else name)
    before = [fingerprint(d) for d in (study, shapes, shapes.parent / "run")]
    code, _, err = cli(*command_writing(command, path, study, shapes)[0])
    assert_one_line_error(code, err)
    assert [fingerprint(d) for d in (study, shapes, shapes.parent / "run")] == before


# ---------------------------------------------------------------------------------------------------------
# Resume on other data, refusals that write nothing, flags that do not apply


def test_resume_refuses_other_data_and_overwrite(cli, study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study / "a", run)
    before = fingerprint(run)
    folder = write_shape_folder(tmp_path / "shapes", classes=2, per_class=10)
    code, _, err = cli("train", "vae", "--out", run, "--resume", "--max-steps", "9", "--dataset", folder)
    assert_one_line_error(code, err, "--resume continues", "--dataset")
    code, _, err = cli("train", "vae", "--out", run, "--resume", "--overwrite", "--max-steps", "9")
    assert_one_line_error(code, err, "give one of them")
    code, _, err = cli("train", "vae", "--out", run, "--resume", "--max-steps", "9",
                       "--model-config", '{"hidden": 64}')
    assert_one_line_error(code, err, "--model-config")
    assert fingerprint(run) == before


def test_a_refused_training_writes_nothing(cli, tmp_path):
    folder = write_shape_folder(tmp_path / "shapes", classes=2, per_class=10, size=28)  # 16 training images
    code, _, err = cli("train", "vae", "--dataset", folder, "--out", tmp_path / "run", "--batch-size", "64",
                       "--max-steps", "1")
    assert_one_line_error(code, err, "--batch-size 64", "16 training images")
    assert not (tmp_path / "run").exists()
    code, _, err = cli("train", "vae", "--dataset", folder, "--out", tmp_path / "run", "--batch-size", "16",
                       "--max-steps", "1", "--model-config", '{"hidden": 16, "latent": 2}')
    assert code == 0, err  # the corrected command is not refused for a leftover


@pytest.mark.parametrize("flag, value, fragment", [
    ("--iw-samples", "1", "--iw-samples"),  # the bound's interval needs two importance samples
    ("--ode-steps", "4", "--ode-steps does not apply to this vae run"),
    ("--bound-timesteps", "4", "--bound-timesteps does not apply"),
    ("--likelihood-images", "30", "--likelihood-images does not apply"),
])
def test_evaluate_refuses_flags_the_run_does_not_use(cli, study, flag, value, fragment):
    before = fingerprint(study / "a")
    code, _, err = cli("evaluate", study / "a", "--n-samples", "20", flag, value)
    assert_one_line_error(code, err, fragment, "--iw-samples")
    assert fingerprint(study / "a") == before


def test_evaluate_a_config_without_settings_is_one_line(cli, study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study / "a", run)
    config = json.loads((run / "config.json").read_text())
    del config["settings"]
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli("evaluate", run, "--n-samples", "20")
    assert_one_line_error(code, err, "no 'settings'")


def test_too_few_samples_are_refused_and_intervals_stay_in_range(cli, study):
    code, _, err = cli("evaluate", study / "a", "--n-samples", "10")
    assert_one_line_error(code, err, "--n-samples")
    assert within_range("recall", [0.745, 1.145]) == [0.745, 1.0]
    assert within_range("coverage", [1.002, 1.002]) == [1.0, 1.0]
    assert within_range("fid", [-0.5, 2.0]) == [0.0, 2.0]
    assert within_range("kid", [-0.1, 0.2]) == [-0.1, 0.2]  # unbiased KID can be negative
    assert enclosing([0.2, 0.4], 0.5) == [0.2, 0.5]
    metrics = json.loads((study / "a" / "metrics.json").read_text())
    for name, (low, high) in metrics["ci95"].items():
        estimate = metrics[name]["mean"] if isinstance(metrics[name], dict) else metrics[name]
        assert low <= estimate <= high, name


# ---------------------------------------------------------------------------------------------------------
# The quickstart: a budget that cannot hold the study, and resumes of what is missing


@pytest.mark.parametrize("args, fragment", [
    (["--minutes", "0.01"], "--minutes 0.01 cannot hold"),
    (["--seeds", "100", "--minutes", "1"], "fewer --seeds"),
])
def test_quickstart_refuses_a_budget_too_small(cli, tmp_path, args, fragment):
    code, _, err = cli("quickstart", "--out", tmp_path / "qs", *args)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "qs").exists()


def test_quickstart_resume_of_nothing_is_refused(cli, tmp_path):
    code, _, err = cli("quickstart", "--out", tmp_path / "missing", "--resume")
    assert_one_line_error(code, err, "nothing to resume")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "other").mkdir()
    code, _, err = cli("quickstart", "--out", tmp_path / "other", "--resume")
    assert_one_line_error(code, err, "no quickstart study")


@pytest.mark.parametrize("added", [(), ("meanflow",)])
def test_quickstart_resume_redoes_a_stage_whose_output_was_deleted(tmp_path, capsys, added):
    """With `--with meanflow`, the meanflow run started from the lost flow run: trained again, from scratch."""
    out = tmp_path / "qs"
    plan = QuickstartPlan(minutes=0.2, minimum_minutes=0, with_models=added)
    out.mkdir()
    write_run_config(out, "quickstart", {"minutes": 0.2, "minimum_minutes": 0, "with_models": list(added)})
    done = ["eda", "evaluator", *[f"train:{n}" for n, _, _ in plan.runs()],
            *[f"evaluate:{n}" for n, _, _ in plan.runs()], "compare"]
    (out / STATE_FILE).write_text(json.dumps({"done": done}))
    for name in ("eda", *[n for n, _, _ in plan.runs()]):
        (out / name).mkdir()
        (out / name / "config.json").write_text("{}")
    for name, _, _ in plan.runs():
        (out / name / "metrics.json").write_text("{}")
    (out / "report").mkdir()
    (out / "report" / "report.md").write_text("")
    shutil.rmtree(out / "flow")
    _, _, kept, restart = _resumed_study(out)
    redone = {"train:flow", "evaluate:flow", "compare"}
    assert restart == set(added)  # the runs that started from the flow run's weights
    assert set(done) - set(kept) == redone | {f"{stage}:{name}" for name in added for stage in ("train", "evaluate")}
    assert "train:flow: its output" in capsys.readouterr().out

