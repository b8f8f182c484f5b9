"""Nothing dropped without a line (issue 22, items 8-10): P-DPO in its own DPO group, PAL's row
says it has no ARGS, absent values of PAL and P-DPO read "not applicable", RM accuracy on no pairs
is "no pairs" (never a number), and each table counts what its metrics left out."""

from __future__ import annotations

import csv
import io

from persalign.metrics.ranking import NO_PAIRS, per_user_accuracy
from persalign.report.writer import write_report

from .test_findings import BENCH, USERS, around, cell_data, write_run


def test_rm_accuracy_on_no_pairs_is_no_number():
    result = per_user_accuracy([], [])
    assert result["mean"] is None and result["pooled"] is None  # was NaN and 0.0
    assert result["status"] == NO_PAIRS and result["pairs"] == 0


def table(files, key: str) -> dict[str, list[str]]:
    header, *rows = csv.reader(io.StringIO(files[f"{BENCH}/{key}.csv"].read_text("utf-8")))
    return {"header": header, **{r[1]: r for r in rows}}


def test_groups_not_applicable_no_pairs_and_counted_left_outs(tmp_path):
    cells = []
    for i, method in enumerate(("global-rm", "lore", "mpu")):
        cells.append(cell_data(
            0, "method", method, rm_accuracy=around(0.6 + 0.05 * i, USERS, 0.01, i),
            policy_accuracy=around(0.5 + 0.05 * i, USERS, 0.01, 10 + i),
            rouge1=around(0.3, USERS, 0.01, 20 + i), win_rate=around(0.5, USERS, 0.01, 30 + i),
        ))  # fmt: skip
    cells[0]["win_rate"]["unpaired_rgd"] = 2
    cells[0]["generation"]["unmatched_references"] = 3
    cells[1]["rm_accuracy"] = {"mean": None, "pooled": None, "per_user": {}, "pairs": 0,
                               "users": 0, "status": NO_PAIRS}  # fmt: skip
    cells.append(cell_data(0, "method", "pal", rm_accuracy=around(0.7, USERS, 0.01, 40)))
    pdpo = cell_data(0, "method", "p-dpo", policy_accuracy=around(0.8, USERS, 0.01, 41),
                     rouge1=around(0.2, USERS, 0.01, 42))  # fmt: skip
    cells.append(pdpo)
    cells.append(cell_data(0, "baseline", "zero-shot", rouge1=around(0.3, USERS, 0.01, 50)))
    files = write_report(write_run(tmp_path, cells), n_boot=50)
    policy = table(files, "policy_smol-135m")
    assert policy["p-dpo"][0] == "DPO"  # the paper's own group, not "Personalized RMs + ARGS"
    assert policy["p-dpo"][2] == "n/a (no RM accuracy)"
    assert policy["pal (no ARGS)"][3:6] == ["n/a (no ARGS)"] * 3
    assert policy["lore"][2] == "no pairs"
    md = files[f"{BENCH}/policy_smol-135m.md"].read_text("utf-8")
    assert "Left out: 5 value(s) not applicable" in md and "1 computed on no pairs" in md
    assert "3 references without a generation" in md
    wins = files[f"{BENCH}/win_rate.md"].read_text("utf-8")
    assert "2 RGD generations without a zero-shot partner" in wins
    detail = files[f"{BENCH}/correlations.md"].read_text("utf-8")
    assert "pal (Policy Acc n/a (no ARGS))" in detail
    page = files["report.md"].read_text("utf-8")
    assert "rm_accuracy: no pairs in 1 cell(s)" in page
    assert "policy_accuracy not applicable (no ARGS) in 1 cell(s)" in page
    assert "rm_accuracy missing" not in page and "policy_accuracy missing" not in page


def test_icl_prompts_left_without_demonstrations_are_listed_and_counted(tmp_path):
    cells = [
        cell_data(0, "method", m, rm_accuracy=around(0.6, USERS, 0.01, i))
        for i, m in enumerate(("global-rm", "lore", "mpu"))
    ]
    icl = cell_data(0, "baseline", "icl", rouge1=around(0.3, USERS, 0.01, 60))
    icl["demonstrations"] = {"prompts": 9, "requested": 9, "shown": 2, "dropped": 7,
                             "truncated_queries": 0, "prompts_without": 7}  # fmt: skip
    rag = cell_data(0, "baseline", "icl-rag", rouge1=around(0.3, USERS, 0.01, 61))
    rag["demonstrations"] = {"prompts": 9, "requested": 9, "shown": 9, "dropped": 0,
                             "truncated_queries": 0, "prompts_without": 0}  # fmt: skip
    files = write_report(write_run(tmp_path, [*cells, icl, rag]), n_boot=50)
    page = files["report.md"].read_text("utf-8")
    notes = page[page.index("## Data notes") :]
    line = next(n for n in notes.splitlines() if "without any demonstration" in n)
    assert f"{icl['cell']} 7" in line and rag["cell"] not in line  # only the cell with some
    metrics = files[f"{BENCH}/metrics.md"].read_text("utf-8")
    assert "7 ICL demonstrations dropped to fit max_prompt_tokens" in metrics
    assert "7 ICL prompts left without any demonstration" in metrics
