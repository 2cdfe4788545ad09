"""pwavenet.evaluation.report: the quality table rendered as markdown, and a saved report read
back from its evaluation folder."""

import json

from pwavenet.evaluation import report


def _table():
    return {
        "split": "validation",
        "num_utterances": 3,
        "seconds": 7.4,
        "copied_from_earlier": ["reference", "griffin_lim"],
        "mean": {
            "reference": {"stoi": 1.0, "pesq_wb": 4.64, "f0_rmse_cents": 0.0},
            "griffin_lim": {"stoi": 0.9704, "pesq_wb": 3.1, "f0_rmse_cents": None},
            "untrained_student": {"stoi": 0.5},
        },
    }


def test_the_rendered_table_has_a_column_per_measure_present_and_a_row_per_system():
    lines = report.render_quality_table(_table())
    assert lines[0] == (
        "Quality over 3 validation utterances (7 s) (the reference, griffin lim rows as the "
        "teacher's report scored them); higher is better for STOI and PESQ, lower for the rest:"
    )
    # Measures in the fixed heading order, only those some system has.
    assert lines[2] == "| system | STOI | PESQ (wb) | F0 RMSE (cents) |"
    assert lines[3] == "| --- | --- | --- | --- |"
    assert lines[4] == "| reference | 1.000 | 4.640 | 0.000 |"
    # An undefined mean (None) reads n/a; a measure the system lacks stays empty.
    assert lines[5] == "| griffin lim | 0.970 | 3.100 | n/a |"
    assert lines[6] == "| untrained student | 0.500 |  |  |"
    assert lines[7:] == [""]


def test_a_saved_report_is_read_from_its_steps_evaluation_folder(tmp_path):
    assert report.saved_report(str(tmp_path), 12) is None
    (tmp_path / "eval_12").mkdir()
    assert report.saved_report(str(tmp_path), 12) is None
    saved = {"step": 12, "quality": _table()}
    (tmp_path / "eval_12" / "report.json").write_text(json.dumps(saved))
    assert report.saved_report(str(tmp_path), 12) == saved
    assert report.saved_report(str(tmp_path), 11) is None
