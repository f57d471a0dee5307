"""The decision core as pure functions over synthetic evidence: Evidence, Constraints and the
decision rules, with no worker and no tuner. Each scenario is one the tuner got wrong before."""

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.harness.trial import StepTimes, TrialResult, TrialSpec, failed
from amp_advisor.numerics import GradStats
from amp_advisor.tuning.constraints import derive
from amp_advisor.tuning.decision import close_group, contenders, decide, explain, machine_busy, needed_twins
from amp_advisor.tuning.evidence import Evidence
from amp_advisor.tuning.record import Role, TrialRecord
from amp_advisor.tuning.space import Candidate, SearchSpace

FP32, BF16, FP16 = Dtype.FP32, Dtype.BF16, Dtype.FP16
SPACE = SearchSpace((FP32, BF16), (16, 32, 64), (2.0**16,), (2000,))


class Trials:
    """Builds TrialRecords in order: t.search(bf16, 32, 4024.0), t.confirm(fp32, 32, 2400.0, round=1)."""

    def __init__(self):
        self.records = []

    def add(self, role, dtype, bs, rate=None, *, round=None, status="ok", feasible=True, error=None, load=None,
            peak=None, levers=(), one_time_s=None):
        spec = TrialSpec("model.py", dtype, bs, device="cpu", levers=levers)
        if status == "ok":
            step = bs / rate
            result = TrialResult(spec, "ok", step_time_s=StepTimes(step, 0.0, step, step, (step,)), samples_per_s=rate,
                                 peak_memory_bytes=peak, grad_stats=GradStats(1.0, 1, 0, 0, 0, 0.01, {}),
                                 one_time_s=one_time_s)
        else:
            result = failed(spec, status, error or status)
        candidate = Candidate(dtype, bs, levers=levers)
        record = TrialRecord(len(self.records) + 1, role, candidate, result, feasible and status == "ok",
                             None if feasible and status == "ok" else (error or status), round, load)
        self.records.append(record)
        return record

    def search(self, *a, **k):
        return self.add(Role.SEARCH, *a, **k)

    def confirm(self, *a, **k):
        return self.add(Role.CONFIRM, *a, **k)

    def view(self, space=SPACE, **kw):
        evidence = Evidence(self.records)
        return evidence, derive(evidence, space, **kw)


def test_the_leader_changes_during_confirmation_and_its_twin_is_the_one_compared():
    """The conv net on the AMX machine: bf16 bs=64 led the search by luck; confirmation put bf16
    bs=32 ahead. The decision compares bf16 bs=32 with fp32 in the same rounds, and recommends it."""
    t = Trials()
    t.search(FP32, 32, 2065.0)
    t.search(BF16, 32, 4024.0)
    t.search(BF16, 64, 4192.0)
    evidence, constraints = t.view()
    # bf16 bs=32 explored within 15% of bs=64: it takes part in the rounds as the runner-up
    assert contenders(evidence, constraints) == [Candidate(BF16, 64), Candidate(BF16, 32), Candidate(FP32, 32)]
    for k in (1, 2):
        t.confirm(BF16, 64, 3900.0 + k, round=k)
        t.confirm(BF16, 32, 4127.0 + k, round=k)
        t.confirm(FP32, 32, 2452.0 + k, round=k)
    evidence, constraints = t.view()
    d = decide(evidence, constraints)
    assert d.candidate == Candidate(BF16, 32)
    assert d.fp32_best.candidate == Candidate(FP32, 32) == d.fp32_same_batch.candidate
    assert d.speedup_vs_fp32 == pytest.approx(4129.0 / 2454.0)  # the best of the shared rounds
    assert set(d.chosen.trials) == {5, 8} and set(d.fp32_same_batch.trials) == {6, 9}
    assert not d.notes


def test_reduced_precision_wins_at_a_batch_where_fp32_was_not_measured_in_search():
    """fp32 only ran at 16 in search; bf16 leads at 64. The twin (fp32 at 64) is asked for after the
    leader is known, and the decision uses the best fp32 (any batch) for the margin."""
    t = Trials()
    t.search(FP32, 16, 1000.0)
    t.search(BF16, 64, 3000.0)
    for k in (1, 2):
        t.confirm(BF16, 64, 2900.0, round=k)
        t.confirm(FP32, 16, 1000.0, round=k)
    evidence, constraints = t.view()
    assert needed_twins(evidence, constraints) == [Candidate(BF16, 64), Candidate(FP32, 16), Candidate(FP32, 64)]
    d = decide(evidence, constraints)  # the twin not measured yet: recommended, but no same-batch speedup
    assert d.candidate == Candidate(BF16, 64) and d.speedup_vs_fp32 is None
    assert d.speedup_vs_best_fp32 == pytest.approx(2.9)
    assert any("fp32 at batch 64 was not measured beside bf16 bs=64" in n for n in d.notes)
    for k in (3, 4):  # the twin rounds: the leader and its twin only
        t.confirm(FP32, 64, 950.0, round=k)
        t.confirm(BF16, 64, 3100.0, round=k)
    d = decide(*t.view())
    assert d.candidate == Candidate(BF16, 64)
    assert d.speedup_vs_fp32 == pytest.approx(3100 / 950)  # within rounds 3-4 only: like with like
    assert d.speedup_vs_best_fp32 == pytest.approx(2.9)  # bf16 64 vs fp32 16 in rounds 1-2
    assert d.fp32_same_batch.trials == (7, 9)
    assert d.chosen.samples_per_s == pytest.approx((2900 + 3100 + 3100) / 3)  # four rounds: all but the slowest


def test_the_leading_dtypes_runner_up_is_confirmed_only_when_it_explored_close():
    """The conv net on the AVX512-BF16 EPYC: bf16 bs=16 led by one noisy trial, bs=64 (the
    oracle's best) explored 9% behind it. Both go to the rounds, and so does the leader's batch
    neighbour (bs=32, 22% behind); a runner-up 20% behind that is no neighbour does not."""
    t = Trials()
    t.search(FP32, 32, 440.0)
    t.search(BF16, 16, 490.0)
    t.search(BF16, 64, 444.0)
    t.search(BF16, 32, 380.0)
    evidence, constraints = t.view()
    assert contenders(evidence, constraints) == [Candidate(BF16, 16), Candidate(BF16, 64), Candidate(FP32, 32),
                                                 Candidate(BF16, 32)]
    for k in (1, 2):
        t.confirm(BF16, 16, 560.0, round=k)
        t.confirm(BF16, 64, 700.0, round=k)
        t.confirm(FP32, 32, 440.0, round=k)
    assert decide(*t.view()).candidate == Candidate(BF16, 64)

    t = Trials()
    t.search(FP32, 32, 440.0)
    t.search(BF16, 16, 490.0)
    t.search(BF16, 32, 300.0)
    t.search(BF16, 64, 390.0)
    assert contenders(*t.view()) == [Candidate(BF16, 16), Candidate(FP32, 32), Candidate(BF16, 32)]


def test_one_slow_round_does_not_decide_between_close_batch_sizes():
    """The transformer on the AVX512-BF16 EPYC: bf16 bs=16 (the oracle's best, 121 vs 112
    samples/s) ran one of its two rounds in a slow patch of the machine. Its best round counts."""
    t = Trials()
    t.search(FP32, 32, 76.5)
    t.search(BF16, 32, 125.6)
    t.search(BF16, 16, 130.8)
    t.confirm(BF16, 16, 121.3, round=1)
    t.confirm(BF16, 32, 119.8, round=1)
    t.confirm(FP32, 32, 76.8, round=1)
    t.confirm(FP32, 32, 77.1, round=2)
    t.confirm(BF16, 32, 120.6, round=2)
    t.confirm(BF16, 16, 101.6, round=2)  # 150-170 ms steps where the rest of the run measured 120-140
    assert decide(*t.view()).candidate == Candidate(BF16, 16)


def test_rounds_added_for_the_twins_do_not_re_rank_the_leader():
    """bf16 bs=16 leads the main rounds; in its twin rounds it measures slower: bs=32 (not in those
    rounds) must not take over on a comparison of different minutes."""
    t = Trials()
    t.search(FP32, 32, 73.0)
    t.search(BF16, 16, 121.0)
    t.search(BF16, 32, 110.0)
    for k, (a, b, c) in enumerate([(117.0, 75.1, 103.5), (107.1, 73.2, 112.5)], start=1):
        t.confirm(BF16, 16, a, round=k)
        t.confirm(FP32, 32, b, round=k)
        t.confirm(BF16, 32, c, round=k)
    evidence, constraints = t.view()
    assert needed_twins(evidence, constraints) == [Candidate(BF16, 16), Candidate(FP32, 32), Candidate(FP32, 16)]
    for k in (3, 4):
        t.confirm(BF16, 16, 104.0, round=k)
        t.confirm(FP32, 16, 72.0, round=k)
    d = decide(*t.view())
    assert d.candidate == Candidate(BF16, 16)
    assert d.speedup_vs_fp32 == pytest.approx(104 / 72)
    # beside the leader, fp32 bs=16 (1.44x) is stronger than fp32 bs=32 (1.51x): the best fp32
    assert d.fp32_best.candidate == Candidate(FP32, 16) and d.speedup_vs_best_fp32 == pytest.approx(104 / 72)


def test_a_twin_faster_than_the_main_rounds_fp32_becomes_the_best_fp32():
    """fp32 bs=64 only ran in the twin rounds and is relatively stronger there (the leader beats it
    by less than it beat fp32 bs=32): it is the best fp32, and the margin is judged against it."""
    t = Trials()
    t.search(FP32, 32, 500.0)
    t.search(BF16, 64, 1900.0)
    for k in (1, 2):
        t.confirm(BF16, 64, 2000.0, round=k)
        t.confirm(FP32, 32, 1100.0, round=k)
    for k in (3, 4):
        t.confirm(BF16, 64, 1900.0, round=k)
        t.confirm(FP32, 64, 1870.0, round=k)  # within the 2% margin of the leader
    d = decide(*t.view())
    assert d.candidate == Candidate(FP32, 64)
    assert any("does not beat the best fp32 configuration, fp32 bs=64" in n for n in d.notes)


def test_an_unconfirmed_configuration_with_one_lucky_measurement_cannot_win():
    """The mlp story: fp16 bs=64 measured once, fast by luck, never re-measured; it must not be
    recommended over configurations measured in the confirmation rounds."""
    t = Trials()
    t.search(FP32, 32, 2500.0)
    t.search(BF16, 32, 3505.0)
    t.search(FP16, 64, 4000.0)
    for k in (1, 2):
        t.confirm(BF16, 32, 2736.0, round=k)
        t.confirm(FP32, 32, 2400.0, round=k)
    d = decide(*t.view(SearchSpace((FP32, BF16, FP16), (32, 64), (2.0**16,), (2000,))))
    assert d.candidate == Candidate(BF16, 32) and d.confirmed
    assert d.chosen.samples_per_s == 2736.0  # the confirmed figure, not the search trial's


def test_a_leader_within_the_margin_of_the_best_fp32_gives_fp32_at_its_best_batch():
    t = Trials()
    t.search(FP32, 16, 1000.0)
    t.search(BF16, 64, 1300.0)
    for k in (1, 2):
        t.confirm(BF16, 64, 1010.0, round=k)
        t.confirm(FP32, 16, 1000.0, round=k)
        t.confirm(FP32, 64, 700.0, round=k)
    d = decide(*t.view())
    assert d.candidate == Candidate(FP32, 16) and d.speedup_vs_fp32 == 1.0
    assert any("does not beat the best fp32 configuration, fp32 bs=16" in n for n in d.notes)


def test_a_slow_period_during_the_first_trials_is_outvoted_by_the_rounds():
    """Trials 1-3 ran while the machine was 10x slower: bf16 looked slow. The best of every dtype
    takes part in the rounds, and the reference configuration's spread shows the drift."""
    t = Trials()
    t.search(FP32, 16, 12.6)  # slow period
    t.search(BF16, 16, 19.3)  # slow period
    t.search(FP32, 32, 125.8)
    evidence, constraints = t.view()
    assert Candidate(BF16, 16) in contenders(evidence, constraints)
    for k in (1, 2):
        t.confirm(FP32, 32, 124.0, round=k)
        t.confirm(BF16, 16, 193.0, round=k)
    evidence, constraints = t.view()
    d = decide(evidence, constraints)
    assert d.candidate == Candidate(BF16, 16)
    busy = machine_busy(evidence, cores=2)  # the same configuration, 10x apart: the worst spread is named
    assert "bf16 bs=16 measured between 19.3 and 193.0 samples/s in trials 2, 5, 7" in busy and "drifted" in busy
    quiet = Trials()
    quiet.search(FP32, 16, 100.0)
    quiet.confirm(FP32, 16, 118.0, round=1)  # 18% apart: this machine's everyday noise
    assert machine_busy(Evidence(quiet.records), cores=2) is None


def test_a_load_above_the_core_count_is_reported():
    t = Trials()
    t.search(FP32, 16, 100.0, load=0.5)
    t.search(FP32, 32, 100.0, load=3.7)
    busy = machine_busy(Evidence(t.records), cores=2)
    assert "above the 2 cores when 1 of 2 trials started (up to 3.7)" in busy


def test_constraints_are_recomputed_from_evidence_in_any_order():
    t = Trials()
    t.search(BF16, 32, 3000.0)
    t.search(BF16, 64, status="oom", error="out of memory")
    t.search(FP32, 16, status="pruned", error="stopped early: the first step took 9.00 s, over the 2.00 s allowed")
    forward = t.view()[1]
    t.records.reverse()
    backward = t.view()[1]
    assert forward == backward
    assert forward.reason(Candidate(BF16, 64)).startswith("bf16 failed with oom at batch 64")
    assert forward.allows(Candidate(BF16, 32))
    # fp32 never ran cleanly and was pruned: with the Bayesian strategy the dtype goes, unless the
    # probe calls it fast (then a second pruned trial is needed)
    assert "fp32 was stopped early at batch 16" in forward.reason(Candidate(FP32, 32))
    assert derive(Evidence(t.records), SPACE, fast={FP32: True}).allows(Candidate(FP32, 32))
    assert derive(Evidence(t.records), SPACE, whole_dtype_pruning=False).allows(Candidate(FP32, 32))


def test_memory_rules_use_measured_peaks_first_then_the_linear_model():
    t = Trials()
    gib = 2**30
    t.search(BF16, 16, 100.0, peak=2 * gib)
    t.search(BF16, 32, 100.0, peak=4 * gib)
    _, constraints = t.view(memory_limit=7 * gib)
    assert "predicted peak memory 8.0 GiB" in constraints.reason(Candidate(BF16, 64))
    t.search(BF16, 64, 100.0, peak=6 * gib)  # measured below the limit: the measurement wins
    _, constraints = t.view(memory_limit=7 * gib)
    assert constraints.allows(Candidate(BF16, 64))


def test_the_explanation_says_what_happened_to_each_dtype():
    t = Trials()
    t.search(FP32, 16, 1000.0)
    t.search(FP16, 16, status="pruned", error="stopped early: the first step took 3.10 s, over the 2.00 s allowed")
    t.search(BF16, 16, 1500.0)
    for k in (1, 2):
        t.confirm(BF16, 16, 1500.0, round=k)
        t.confirm(FP32, 16, 1000.0, round=k)
    evidence, constraints = t.view(SearchSpace((FP32, BF16, FP16), (16,), (2.0**16,), (2000,)))
    d = decide(evidence, constraints)
    text = explain(d, evidence, constraints, (FP32, BF16, FP16), {})
    assert text.startswith("bf16 bs=16 was the fastest configuration that kept fp32's numerics (1500.0 samples/s in "
                           "interleaved confirmation rounds)")
    assert "1.50x the best fp32 configuration (fp32 bs=16)" in text
    assert ("fp16 was stopped early at batch 16 (trial 2): the first step took 3.10 s, over the 2.00 s allowed (the "
            "limit is 4x the step time the best rate so far implies, at least 2 s)") in text
    assert "fp32 reached 1000.0 samples/s at best (fp32 bs=16, beside it in the same rounds)" in text


def test_space_is_the_one_authority_on_batch_sizes():
    plain = SearchSpace((FP32,), (16, 32, 64), (2.0**16,), (2000,))
    assert plain.between(32, 64) == 48 and plain.between(8, 12) == 10 and plain.between(8, 9) is None
    assert plain.baseline_batch == 32 and plain.point(FP32, 16) == Candidate(FP32, 16)
    with_global = SearchSpace((FP32,), (16, 32), (2.0**16,), (2000,), global_batch=64)
    assert with_global.between(32, 64) is None  # 48 would break micro-batch x accumulation = 64
    assert SearchSpace((FP32,), (16, 32), (1.0,), (1,), global_batch=96).between(32, 96) == 48
    assert with_global.grad_accum(16) == 4
    with pytest.raises(ValueError):
        with_global.grad_accum(48)


def test_a_close_calls_own_rounds_decide_between_the_configurations_they_measured():
    """bf16 bs=16 leads the main rounds by a hair; four more rounds of the close call (bs=16,
    bs=8 and the leader's twin) put bs=8 ahead over all six rounds the two shared."""
    t = Trials()
    t.search(FP32, 32, 74.0)
    t.search(BF16, 16, 119.0)
    t.search(BF16, 8, 122.0)
    for k, (a, b) in enumerate([(140.5, 135.1), (127.0, 127.0)], start=1):
        t.confirm(BF16, 16, a, round=k)
        t.confirm(BF16, 8, b, round=k)
        t.confirm(FP32, 32, 75.0, round=k)
    evidence, constraints = t.view(SearchSpace((FP32, BF16), (8, 16, 32), (2.0**16,), (2000,)))
    assert close_group(evidence, constraints) == [Candidate(BF16, 16), Candidate(BF16, 8)]
    for k, (a, b) in enumerate([(106.1, 139.2), (124.9, 125.7), (102.1, 119.8), (107.3, 120.0)], start=3):
        t.confirm(BF16, 16, a, round=k)
        t.confirm(BF16, 8, b, round=k)
        t.confirm(FP32, 8, 80.0, round=k)
    d = decide(*t.view(SearchSpace((FP32, BF16), (8, 16, 32), (2.0**16,), (2000,))))
    assert d.candidate == Candidate(BF16, 8) and d.fp32_same_batch.candidate == Candidate(FP32, 8)


def test_one_shared_round_with_an_outlier_in_it_crowns_nobody():
    """A close call's third round caught the leader in a 3x outlier beside its fp32 twin, which
    had met it in no other round: over that one round the twin was 2.2x faster, and fp32 was
    recommended where bf16 is 2x faster (quality 0.488). A configuration is ranked against the
    leader over two shared rounds at least."""
    t = Trials()
    t.search(FP32, 32, 1888.0)
    t.search(BF16, 32, 3543.0)
    t.search(BF16, 64, 4227.0)
    t.search(FP32, 64, 2085.0)
    for k, (a, b) in enumerate([(4459.0, 3333.0), (2870.0, 2268.0)], start=1):
        t.confirm(BF16, 64, a, round=k)
        t.confirm(BF16, 32, b, round=k)
    t.confirm(BF16, 64, 967.5, round=3)
    t.confirm(BF16, 32, 2482.0, round=3)
    t.confirm(FP32, 64, 2125.0, round=3)
    assert decide(*t.view()).candidate == Candidate(BF16, 64)


def test_configurations_with_a_one_time_cost_are_ranked_over_the_planned_run():
    """A simulated AMX machine: compiled bf16 bs=16 is the fastest per step, but its 10 s compile
    weighs twice as much on its samples as on bs=32's: over a planned run of 10,000 steps the
    compiled bs=32 trains faster, and is recommended. Without a planned run, per step decides."""
    compiled = (("compile", "default"),)
    t = Trials()
    t.search(FP32, 32, 1200.0)
    rates = {(16, ()): 1700.0, (32, ()): 1650.0, (16, compiled): 2400.0, (32, compiled): 2300.0}
    for k in (1, 2):
        t.confirm(FP32, 32, 1200.0, round=k)
        for (bs, levers), rate in rates.items():
            t.confirm(BF16, bs, rate, round=k, levers=levers, one_time_s=10.0 if levers else None)
    evidence, constraints = t.view(train_steps=10_000)
    assert decide(evidence, constraints).candidate == Candidate(BF16, 32, levers=compiled)
    evidence, constraints = t.view()
    assert decide(evidence, constraints).candidate == Candidate(BF16, 16, levers=compiled)
