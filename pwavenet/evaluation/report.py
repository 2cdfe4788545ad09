"""An evaluation's reports: report.json written (`write_report`) and read back
(`saved_report`), and the pipeline's human-readable summary (`write_markdown`), a markdown page
with the quality table (`render_quality_table`) linking audio and plots."""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging


def _teacher_section(r: dict[str, Any], eval_dir: str) -> list[str]:
    lines = [
        "| metric | value |",
        "| --- | --- |",
        f"| validation NLL | {r['validation_nll']:.4f} nats/sample "
        f"({r['validation_bits_per_sample']:.3f} bits) |",
        f"| log-mel L1, generated vs reference | {r['log_mel_l1']:.3f} |",
        f"| log-mel L1, reference vs another reference | "
        f"{r['log_mel_l1_between_references']:.3f} |",
    ]
    for s in r["generation_speed"]:
        lines.append(
            f"| generation, batch {s['batch_size']} | {s['samples_per_second']:,.0f} "
            f"samples/s (real-time factor {s['real_time_factor']:.2f}) |"
        )
    lines += ["", f"![spectrograms]({eval_dir}/mels.png)", ""]
    for i in range(r["num_utterances"]):
        lines.append(
            f"- utterance {i}: [reference]({eval_dir}/reference_{i}.wav), "
            f"[generated]({eval_dir}/generated_{i}.wav), "
            f"[Griffin-Lim]({eval_dir}/griffin_lim_{i}.wav)"
        )
    return lines


def _student_section(r: dict[str, Any], eval_dir: str) -> list[str]:
    d, s = r["distillation"], r["speed"]
    lines = [
        "| metric | value |",
        "| --- | --- |",
        f"| log-mel L1, student vs reference | {r['log_mel_l1_student']:.3f} |",
        f"| log-mel L1, teacher vs reference | {r['log_mel_l1_teacher']:.3f} |",
        f"| student / teacher spectral distance | {r['student_to_teacher_l1_ratio']:.3f} |",
        f"| log-mel L1, reference vs another reference | "
        f"{r['log_mel_l1_between_references']:.3f} |",
        f"| teacher NLL of student audio | {r['teacher_nll_of_student_audio']:.3f} nats/sample |",
        f"| teacher NLL of teacher audio | {r['teacher_nll_of_teacher_audio']:.3f} nats/sample |",
        f"| teacher NLL of real audio | {r['teacher_nll_of_real_audio']:.3f} nats/sample |",
        f"| student NLL of real audio | {r['student_nll_of_real_audio']:.3f} nats/sample |",
        f"| KL(student, teacher) estimate | {d['kl']:.3f} nats/sample |",
        f"| power loss | {d.get('power_loss', float('nan')):.4f} |",
        f"| student synthesis, batch {s['batch_size']} | "
        f"{s['student_samples_per_second']:,.0f} samples/s (real-time factor "
        f"{s['student_real_time_factor']:.4f}) |",
        f"| teacher generation, same mels | {s['teacher_samples_per_second']:,.0f} samples/s "
        f"(real-time factor {s['teacher_real_time_factor']:.3f}) |",
        f"| student speed / teacher speed | {s['student_over_teacher']:.1f}x |",
        "",
        f"![spectrograms: reference, teacher, student]({eval_dir}/mels.png)",
        "",
    ]
    for i in range(r["num_utterances"]):
        lines.append(
            f"- utterance {i}: [reference]({eval_dir}/reference_{i}.wav), "
            f"[teacher]({eval_dir}/teacher_{i}.wav), [student]({eval_dir}/student_{i}.wav), "
            f"[Griffin-Lim]({eval_dir}/griffin_lim_{i}.wav)"
        )
    return lines


_MEASURE_HEADINGS = {
    "stoi": "STOI",
    "pesq_wb": "PESQ (wb)",
    "mcd_db": "MCD (dB)",
    "f0_rmse_cents": "F0 RMSE (cents)",
    "vuv_error": "V/UV error",
    "gross_pitch_error": "gross pitch error",
    "f0_fine_cents": "fine F0 (cents)",
    "periodicity_rmse": "periodicity RMSE",
    "mrstft": "MR-STFT",
    "teacher_nll": "teacher NLL",
    "worst_teacher_nll": "worst teacher NLL",
    "worst_peak": "worst peak",
}


def render_quality_table(q: dict[str, Any]) -> list[str]:
    """Markdown lines of a quality table (`tables.quality_table`): the mean measures, a row per
    system (pwavenet.evaluation.quality's measures)."""
    measures = [m for m in _MEASURE_HEADINGS if any(m in v for v in q["mean"].values())]
    copied = q.get("copied_from_earlier")
    source = ""
    if copied:
        names = ", ".join(c.replace("_", " ") for c in copied)
        source = f" (the {names} rows as the teacher's report scored them)"
    lines = [
        f"Quality over {q['num_utterances']} {q['split']} utterances ({q['seconds']:.0f} s)"
        f"{source}; higher is better for STOI and PESQ, lower for the rest:",
        "",
        "| system | " + " | ".join(_MEASURE_HEADINGS[m] for m in measures) + " |",
        "| --- |" + " --- |" * len(measures),
    ]
    for system, values in q["mean"].items():
        cells = [
            "" if m not in values else "n/a" if values[m] is None else f"{values[m]:.3f}"
            for m in measures
        ]
        lines.append(f"| {system.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(root: str, reports: dict[str, dict[str, Any]]) -> str:
    """Writes `<root>/report.md` from evaluation reports keyed by model name; returns its path."""
    lines = ["# pwavenet run report", ""]
    for name, r in reports.items():
        eval_dir = os.path.relpath(os.path.join(r["workdir"], f"eval_{r['step']}"), root)
        lines += [f"## {name} (step {r['step']}, variant {r.get('variant') or 'custom'})", ""]
        section = _student_section if r.get("kind") == "student" else _teacher_section
        lines += render_quality_table(r["quality"])
        lines += section(r, eval_dir)
        lines.append("")
    path = os.path.join(root, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def write_report(out: str, report: dict[str, Any]) -> dict[str, Any]:
    """Writes <out>/report.json (with the folder's file list) and returns the report."""
    report["files"] = sorted(set(os.listdir(out)) | {"report.json"})
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    means = report["quality"]["mean"]
    logging.info(
        "Evaluation of %s step %d on %d %s utterances: %s",
        report["workdir"],
        report["step"],
        report["quality"]["num_utterances"],
        report["quality"]["split"],
        "; ".join(
            f"{name} "
            + ", ".join(f"{k} {v}" if v is None else f"{k} {v:.3f}" for k, v in m.items())
            for name, m in means.items()
        ),
    )
    return report


def saved_report(workdir: str, step: int) -> dict[str, Any] | None:
    """The report.json of `workdir`'s default evaluation folder for `step` (eval_<step>), or
    None if there is none."""
    path = os.path.join(workdir, f"eval_{step}", "report.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
