"""experiments/bench_scale.py, the CelebA-scale dry run, at a tiny N: every run it reports is a
real NeuroSQL fit whose assignment step leaves π a permutation, and its plan keeps within memory."""

from __future__ import annotations

import math

import torch

from experiments import bench_scale


def test_tiny_dry_run_reports_every_size_and_bank_setting_with_a_permutation_after_the_step() -> None:
    args = bench_scale.build_parser().parse_args(
        ["--sizes", "300", "400", "--configs", "neurosql", "--image-size", "16", "--max-gb", "4"]
    )
    rows, text = bench_scale.run_benchmark(args, in_process=True)

    assert {(r["N"], r["banks"]) for r in rows} == {(300, "on"), (300, "capped"), (400, "on"), (400, "capped")}
    for r in rows:
        assert "error" not in r
        assert r["pi_is_permutation"] and r["num_codes"] == r["N"]
        for key in ("step_s", "pca_s", "lattice_s", "rss_gb"):
            assert r[key] > 0, (key, r)
        assert math.isclose(r["s_per_1k"], r["step_s"] / r["N"] * 1000)
        if r["banks"] == "on":  # cost_outputs "epoch": the step reuses every record of the epoch
            assert r["bank_dtypes"] == "float32/float32" and r["frac_reused"] == 1.0 and r["recorded"] == r["N"]
        else:  # no bank fits feature_cache_gb 0: nothing recorded, costs computed when needed
            assert r["bank_dtypes"] == "none/none" and r["frac_reused"] == 0.0 and r["recorded"] == 0

    table = text.split("\n\n")[1].splitlines()
    assert table[0] == ("| N | config | step s (on / capped) | s per 1k images (on / capped) | PCA start s | lattice s "
                        "| peak RSS GB (on / capped) |")
    assert [line.split(" | ")[:2] for line in table[2:]] == [["| 300", "neurosql"], ["| 400", "neurosql"]]
    assert "ratio 400 / 300 = " in text
    assert "24 GB of RAM" in text and "128 GB of RAM" in text


def test_plan_reads_the_model_pieces_and_skips_runs_that_do_not_fit() -> None:
    assert bench_scale.resolved_args("neurosql")["cost_outputs"] == "epoch"
    gpu = bench_scale.resolved_args("neurosql_gpu")
    assert (gpu["perceptual"], gpu["cost_outputs"], gpu["block_strategy"], gpu["init"]) == (
        "stlpips-alex", "fresh", "multiscale", "pca")
    assert bench_scale.banks_held("neurosql") == bench_scale.banks_held("neurosql_gpu") == 2

    args = bench_scale.build_parser().parse_args(["--sizes", str(bench_scale.CELEBA_N), "--max-gb", "24"])
    specs = {(s.config, s.banks): s for s in bench_scale.plan(args)}
    n = bench_scale.CELEBA_N
    on = specs["neurosql", "on"]  # 2 float32 banks of 162,770 × 12,288 values: 16 GB
    assert (on.bank_dtype, on.skipped) == ("float32", "") and on.predicted_gb <= 24
    assert on.feature_cache_gb == n * 3 * 64 * 64 * 4 / 2**30
    gpu_on = specs["neurosql_gpu", "on"]  # 2 float16 banks of 170,432 values per row: 111 GB
    assert gpu_on.skipped.startswith("skipped") and gpu_on.predicted_gb > 100
    for config in ("neurosql", "neurosql_gpu"):
        capped = specs[config, "capped"]
        assert (capped.feature_cache_gb, capped.bank_dtype, capped.skipped) == (0.0, "none", "")


def test_synthetic_images_are_deterministic_per_index_and_not_flat() -> None:
    small = bench_scale.synthetic_pixels(300, (3, 16, 16), seed=0)
    large = bench_scale.synthetic_pixels(600, (3, 16, 16), seed=0)
    assert small.dtype == torch.uint8 and small.shape == (300, 3, 16, 16)
    assert torch.equal(small, large[:300])  # image i does not depend on N
    assert not torch.equal(small, bench_scale.synthetic_pixels(300, (3, 16, 16), seed=1))
    assert small.float().std() > 20
