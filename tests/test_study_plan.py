"""The study planner's arithmetic on faked host speeds: a budget that holds, the same shares of time on a slow
and a fast host, sample counts that step down before training is starved, and one line when nothing fits."""

import pytest

from vaediff.costs import ModelSpeed, curve_samples_that_fit
from vaediff.errors import ConfigError
from vaediff.quickstart import QuickstartPlan
from vaediff.study_plan import (
    MIN_TRAIN_FRACTION,
    SAFETY,
    SAMPLE_LADDER,
    HostSpeed,
    fixed_plan,
    fixed_steps,
    plan_study,
    sample_ladder,
    shares,
)

SHARES = shares()
RUNS = [(name, name) for name in SHARES]


def host(slowness: float = 1.0) -> HostSpeed:
    """Speeds of the order this project's 2-core CPUs measure, every one `slowness` times slower."""
    def speed(step_s, sample_s, steps, likelihood_s, guided=True, conditional=True):
        return ModelSpeed(sample_s=sample_s * slowness, sampler_steps=steps, guided=guided, conditional=conditional,
                          likelihood_s=likelihood_s * slowness, step_s=step_s * slowness)

    models = {"vae": speed(0.006, 3e-5, None, 2.0, guided=False, conditional=False),
              "cvae": speed(0.005, 3e-5, None, 2.0, guided=False),
              "diffusion": speed(0.12, 0.06, 20, 19.0),
              "latent-diffusion": speed(0.16, 0.014, 10, 0.0),
              "flow": speed(0.12, 0.02, 8, 35.0)}
    return HostSpeed(models, 0.0006 * slowness, probe_s=25 * slowness)


def test_a_slow_and_a_fast_host_get_the_same_shares_and_different_steps():
    fast, slow = plan_study(15, host(1.0), RUNS, None, elapsed_s=25), plan_study(15, host(1.6), RUNS, None, elapsed_s=40)
    for plan in (fast, slow):
        minutes = plan.train_minutes
        assert minutes["diffusion"] / minutes["flow"] == pytest.approx(SHARES["diffusion"] / SHARES["flow"])
        assert minutes["vae"] / minutes["latent-diffusion"] == pytest.approx(SHARES["vae"] / SHARES["latent-diffusion"])
        # the whole study, estimates inflated by SAFETY, ends within the budget
        reserved = SAFETY * sum(v for k, v in plan.estimated_s.items() if k != "training")
        assert sum(minutes.values()) * 60 + reserved + (25 if plan is fast else 40) <= 15 * 60 + 1
        assert sum(minutes.values()) >= MIN_TRAIN_FRACTION * 15
    assert all(slow.expected_steps[name] < fast.expected_steps[name] for name, _ in RUNS)
    assert slow.train_minutes["diffusion"] < fast.train_minutes["diffusion"]  # more of the budget evaluates
    # steps follow minutes / measured seconds per step
    assert fast.expected_steps["flow"] == int(fast.train_minutes["flow"] * 60 / host().models["flow"].step_s)


def test_sample_counts_step_down_before_training_is_starved():
    roomy, tight = plan_study(60, host(), RUNS, None), plan_study(6, host(), RUNS, None, elapsed_s=30)
    assert (roomy.eval_samples, roomy.curve_samples, roomy.likelihood_images) == SAMPLE_LADDER[0]
    assert tight.eval_samples < roomy.eval_samples and tight.likelihood_images <= roomy.likelihood_images
    assert (tight.eval_samples, tight.curve_samples, tight.likelihood_images) in SAMPLE_LADDER
    # an untrained evaluator costs its training first: less time for the models
    fresh = plan_study(15, host(), RUNS, evaluator_train_images=4000)
    assert fresh.estimated_s["evaluator"] > 0
    assert sum(fresh.train_minutes.values()) < sum(plan_study(15, host(), RUNS, None).train_minutes.values())


def test_a_budget_too_small_is_one_line_with_the_smallest_that_holds():
    with pytest.raises(ConfigError, match=r"give --minutes (\d+) or more") as error:
        plan_study(2, host(), RUNS, None, elapsed_s=25)
    needed = int(error.value.args[0].split("give --minutes ")[1].split()[0])
    plan = plan_study(needed, host(), RUNS, None, elapsed_s=25)  # and that budget does hold a study
    assert (plan.eval_samples, plan.curve_samples, plan.likelihood_images) == SAMPLE_LADDER[-1]
    with pytest.raises(ConfigError):
        plan_study(needed, host(3.0), RUNS, None, elapsed_s=75)  # a slower host needs more


def test_three_seeds_share_the_budget_equally():
    plan = QuickstartPlan(minutes=45, seeds=3, seed=4)
    runs = [(name, model_type) for name, model_type, _ in plan.runs()]
    assert runs[:3] == [("vae-seed4", "vae"), ("vae-seed5", "vae"), ("vae-seed6", "vae")] and len(runs) == 15
    study = plan_study(45, host(), runs, None)
    seeds = [study.train_minutes[f"diffusion-seed{s}"] for s in (4, 5, 6)]
    assert seeds[0] == seeds[1] == seeds[2]
    one = plan_study(15, host(), RUNS, None)
    assert seeds[0] == pytest.approx(one.train_minutes["diffusion"], rel=0.5)  # 45 minutes for three: about one each


def test_the_sample_ladder_starts_at_the_largest_counts_asked_for():
    assert sample_ladder(SAMPLE_LADDER[0]) == list(SAMPLE_LADDER)
    assert sample_ladder((30, 20, 20)) == [(30, 20, 20)]  # tiny studies in tests: exactly what they ask
    assert sample_ladder((700, 50, 100))[0] == (700, 50, 100) and sample_ladder((700, 50, 100))[-1] == SAMPLE_LADDER[-1]


def test_curves_shrink_to_the_time_left_or_are_left_out():
    speeds = list(host().models.values())
    steps = (5, 10, 20, 50)
    assert curve_samples_that_fit(1e6, speeds, 100, steps, 0.0006) == 100
    fewer = curve_samples_that_fit(60, speeds, 100, steps, 0.0006)
    assert 20 <= fewer < 100
    assert curve_samples_that_fit(1, speeds, 100, steps, 0.0006) == 0


def test_fixed_work_is_the_same_on_any_host():
    plan = fixed_plan(RUNS)
    assert plan.work == "fixed" and plan.expected_steps == fixed_steps() and plan.train_minutes == {}
    assert (plan.eval_samples, plan.curve_samples, plan.likelihood_images) == SAMPLE_LADDER[0]
    assert fixed_plan(RUNS, steps={"flow": 7}).expected_steps["flow"] == 7
    with pytest.raises(ConfigError, match="--work must be one of budget, fixed"):
        QuickstartPlan(work="fast").check_budget()


def test_an_added_meanflow_run_takes_its_share_and_follows_the_study_s_flow_run(cli, tmp_path):
    speeds = host()
    speeds.models["meanflow"] = ModelSpeed(sample_s=0.003, sampler_steps=1, guided=False, conditional=True,
                                           likelihood_s=35.0, step_s=0.27)
    plan = QuickstartPlan(with_models=("meanflow",))
    runs = [(name, model_type) for name, model_type, _ in plan.runs()]
    assert runs[-1] == ("meanflow", "meanflow") and runs[:-1] == RUNS  # after flow, whose weights it starts from
    study = plan_study(15, speeds, runs, None, elapsed_s=25)
    minutes = study.train_minutes
    assert minutes["meanflow"] / minutes["flow"] == pytest.approx(0.2 / SHARES["flow"])
    assert sum(minutes.values()) == pytest.approx(sum(plan_study(15, host(), RUNS, None, elapsed_s=25)
                                                      .train_minutes.values()), rel=0.2)  # the budget still holds
    code, _, err = cli("quickstart", "--out", tmp_path / "qs", "--with", "vae", "--work", "fixed")
    assert code == 2 and "--with vae" in err and "meanflow" in err and not (tmp_path / "qs").exists()
