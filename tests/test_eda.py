import json
import subprocess
import sys

from matplotlib.image import imread

from vaediff.eda import run_eda


def test_eda_writes_four_pngs_and_a_consistent_summary(mnist5k, tmp_path):
    summary = run_eda(mnist5k, tmp_path)
    for name in ("dist.png", "samples.png", "class_means.png", "pixels.png"):
        image = imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 60 and image.shape[1] > 300
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored == summary
    per_split = [sum(stored["splits"][s]["per_class"].values()) for s in ("train", "test")]
    assert per_split == [4000, 1000] and stored["num_images"] == 5000
    assert 0.1 < stored["pixel_mean"] < 0.2 and stored["image_size"] == [1, 28, 28]


def test_eda_cli_refuses_non_empty_directory_unless_overwrite(cli, tmp_path):
    out = tmp_path / "eda"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, err = cli("eda", "--out", out)
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("eda", "--out", out, "--overwrite")
    assert code == 2 and "refusing to delete" in err and (out / "keep.txt").exists()
    (out / "keep.txt").unlink()
    assert cli("eda", "--out", out)[0] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vaediff_version"] and config["settings"]["dataset"] == "mnist-5k"
    assert cli("eda", "--out", out)[0] == 2
    assert cli("eda", "--out", out, "--overwrite")[0] == 0


def test_help_through_the_real_entry_point():
    result = subprocess.run([sys.executable, "-m", "vaediff", "--help"], capture_output=True, text=True, check=True)
    for command in ("eda", "train", "sample", "evaluate"):
        assert command in result.stdout
