"""The Ray backend submits the model jobs that train a backbone first (the longest jobs of a run),
then the other model jobs, then the cells of the first, then the other cells, and every job after
the jobs it needs."""

from __future__ import annotations

from persalign.runs.backends import expected_long, submission_order
from persalign.runs.plan import make_plan

from .fidelity_scoring import prepared, tiny_config


def test_backbone_training_models_go_first_and_needs_come_before(tmp_path, tiny_lm):
    methods = {
        "global-rm": {"backbone_training": "frozen"},
        "genarm": None,  # LoRA: the long one
        "lore": {"backbone_training": "frozen"},
    }
    config = tiny_config(tmp_path, tiny_lm, methods, seeds=[0, 1], baselines={"icl": [1]})
    jobs = make_plan(config, prepared(tmp_path))
    order = submission_order(jobs)
    assert sorted(j.id for j in order) == sorted(j.id for j in jobs)  # nothing lost or doubled
    kinds = [("long" if expected_long(j) else j.kind) for j in order]
    assert kinds == sorted(kinds, key=["long", "model", "cell"].index)
    assert [j.id for j in order if expected_long(j)] == [
        j.id for j in jobs if j.kind == "model" and j.spec.method == "genarm"
    ]  # both seeds' GenARM models, and only they
    cells = [j for j in jobs if j.kind == "cell"]
    long_cells = [j for j in cells if j.spec.kind == "method" and j.spec.method == "genarm"]
    assert len(long_cells) == 2  # one per seed, each needing its GenARM model
    # with what they need (the zero-shot cells they read), in plan order, before the rest
    first = {j.id for j in long_cells} | {n for j in long_cells for n in j.needs}
    expected = [j.id for j in cells if j.id in first] + [j.id for j in cells if j.id not in first]
    assert [j.id for j in order if j.kind == "cell"] == expected
    assert any(j.spec.kind == "baseline" for j in cells if j.id in first)  # zero-shot moved up
    seen: set[str] = set()
    for job in order:  # the backend passes a job the refs of what it needs: submitted earlier
        assert set(job.needs) <= seen, job.id
        seen.add(job.id)
    assert jobs[0].id != order[0].id  # the plan's order alone starts elsewhere
