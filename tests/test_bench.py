"""`mbgen bench`: every throughput beside the reference in the same unit, with their ratio."""

import json

import pytest
from helpers import mbgen
from mbgen.launch.bench.throughput import (
    REFERENCE,
    arithmetic,
    bench_config,
    load_reference,
    ratios,
    table,
    update_flops,
    update_products,
)


def test_ratios_and_the_table_put_like_beside_like(tmp_path):
    results = {"er_p1_member_updates_per_s": 206.0, "simple_p30_member_updates_per_s": 202.0, "matmul_gflops": 150.0}
    reference = {"er_p1_member_updates_per_s": 412.0, "simple_p30_member_updates_per_s": 101.0}
    r = ratios(results, reference)
    assert r == {"er_p1_member_updates_per_s": 0.5, "simple_p30_member_updates_per_s": 2.0}
    text = table({**results, "reference": reference, "ratios": r, "reference_source": "here"})
    er_row = next(line for line in text.splitlines() if line.startswith("ER P=1, end to end"))
    assert "(member-updates/s)" in er_row and "206.0" in er_row and "412.0" in er_row and "0.50x" in er_row
    assert ">= 1.0x" in er_row and "reference: here" in text


def test_the_arithmetic_each_figure_and_each_goal_asks_of_the_machine():
    """GFLOP/s = GFLOP per member-update x member-updates/s, beside the matmul rates: by hand, ER updates of
    0.25 GFLOP at 200 (mbgen) and 400 (reference) member-updates/s are 50 and 100 GFLOP/s; P=1's goal (1.0x)
    asks 100, P=30's (1.5x of 400) asks 150, 1.5 times a matmul rate of 100."""
    r = {
        "er_p1_member_updates_per_s": 200.0,
        "er_p30_member_updates_per_s": 300.0,
        "er_update_gflop": 0.25,
        "matmul_gflops": 100.0,
        "matmul_peak_gflops": 200.0,
        "reference": {"er_p1_member_updates_per_s": 400.0, "er_p30_member_updates_per_s": 400.0},
    }
    a = arithmetic(r)
    assert set(a) == {"er_p1_member_updates_per_s", "er_p30_member_updates_per_s"}  # no simple figures, no rows
    p1, p30 = a["er_p1_member_updates_per_s"], a["er_p30_member_updates_per_s"]
    assert (p1["mbgen_gflops"], p1["reference_gflops"], p1["goal_gflops"]) == (50.0, 100.0, 100.0)
    assert (p1["mbgen_share_of_matmul"], p1["mbgen_share_of_matmul_peak"], p1["goal_share_of_matmul"]) == (
        0.5,
        0.25,
        1.0,
    )
    assert (p30["mbgen_gflops"], p30["goal_gflops"], p30["goal_share_of_matmul"]) == (75.0, 150.0, 1.5)
    text = table({**r, "ratios": ratios(r, r["reference"]), "arithmetic": a})
    assert "  ER P=30: mbgen 75.0 (75%), reference 100.0 (100%), goal 150.0 (150%)" in text.splitlines()


def test_the_products_of_one_update_by_hand():
    """ProcMaze(4): 64 observation bits, 5 actions, Q 64-200-200-200-5, batch 320. Forward: 2*320*(64*200 +
    2*200*200 + 200*5) = 60,032,000 FLOPs; ER = forward + weight gradients (the same) + input gradients (the
    same less layer 1: 640*64*200 = 8,192,000) + the target's forward = 231,936,000."""
    er = update_products(bench_config("er"))
    forward = [(320, 64, 200), (320, 200, 200), (320, 200, 200), (320, 200, 5)]
    weights = [(64, 320, 200), (200, 320, 200), (200, 320, 200), (200, 320, 5)]
    inputs = [(320, 200, 200), (320, 200, 200), (320, 5, 200)]
    assert er == forward + weights + inputs + forward
    assert update_flops(bench_config("er")) == 231_936_000
    # simple: + the 3 heads (69 inputs: 64 bits and 5 actions) trained on 32, + 10 rollout steps on 32 starts
    heads = [2 * 32 * (69 * 200 + 2 * 200 * 200 + 200 * out) for out in (64, 1, 1)]
    q32 = 2 * 32 * (64 * 200 + 2 * 200 * 200 + 200 * 5)
    train = sum(3 * h - 2 * 32 * 69 * 200 for h in heads)
    assert update_flops(bench_config("simple")) == 231_936_000 + train + 10 * (q32 + sum(heads))


def test_a_reference_file_from_the_authors_timer(tmp_path):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps({"er_p1_member_updates_per_s": 400.5, "simple_p1_member_updates_per_s": 70}))
    figures, source = load_reference(str(path))
    assert figures == {"er_p1_member_updates_per_s": 400.5, "simple_p1_member_updates_per_s": 70.0}
    assert source == str(path)
    assert load_reference(None)[0] == REFERENCE
    (tmp_path / "bad.json").write_text(json.dumps({"er_p1_updates_per_s": 3}))
    with pytest.raises(ValueError, match="has none of er_p1_member_updates_per_s"):
        load_reference(str(tmp_path / "bad.json"))


def test_bench_prints_json_with_the_reference_and_ratios(tmp_path):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps({"er_p1_member_updates_per_s": 400.0}))
    done = mbgen("bench", "--only", "matmul,floor", "--quick", "--json", "--reference", str(path))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (
        out["matmul_gflops"] > 0
        and out["matmul_peak_gflops"] > 0
        and out["reference"] == {"er_p1_member_updates_per_s": 400.0}
    )
    assert out["reference_source"] == str(path) and out["ratios"] == {} and out["arithmetic"] == {}
    floors = [
        f"gemm_floor_{a}_p{m}_member_updates_per_s" for a, m in (("er", 1), ("simple", 1), ("er", 30), ("simple", 30))
    ]
    assert all(out[k] > 0 for k in floors)
    assert out["gemm_floor_er_p1_member_updates_per_s"] > out["gemm_floor_simple_p1_member_updates_per_s"]
