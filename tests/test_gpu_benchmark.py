"""benchmarks/gpu.py, the script a lent GPU runs (issue 39), in its tiny mode on the CPU: every number it
promises is there and plausible, so that the one GPU session is not spent finding a typo."""

from __future__ import annotations

from benchmarks.gpu import SEED_RECIPE_STEPS, main


def test_the_gpu_benchmark_runs_tiny_on_the_cpu_and_reports_every_number(capsys):
    results = main(["--tiny"])
    printed = capsys.readouterr().out
    assert results["tiny"] and results["bf16_peak_tflops"] > 0
    assert set(results["training"]) == {f"{recipe}/{batch}/{precision}" for recipe in ("fast", "seed", "flow")
                                        for batch in (8, 16) for precision in ("fp32", "bf16")}
    for numbers in results["training"].values():
        assert numbers["images_per_s"] > 0 and 0 < numbers["percent_of_bf16_peak"] < 1000
    assert results["sampling"]["flow_8_steps_images_per_s"] > results["sampling"]["ddpm_1000_steps_images_per_s"] > 0
    assert results["seed_recipe_hours"] > 0 and SEED_RECIPE_STEPS == 93750
    assert "| fast/16/bf16 |" in printed and "seed's full recipe" in printed
