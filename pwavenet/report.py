"""The pipeline's human-readable summary: a markdown page linking audio and plots."""

from __future__ import annotations

import os
from typing import Any


def write_markdown(root: str, reports: dict[str, dict[str, Any]]) -> str:
    """Writes `<root>/report.md` from evaluation reports keyed by model name; returns its path."""
    lines = ["# pwavenet run report", ""]
    for name, r in reports.items():
        eval_dir = os.path.relpath(os.path.join(r["workdir"], f"eval_{r['step']}"), root)
        lines += [
            f"## {name} (step {r['step']}, variant {r.get('variant') or 'custom'})",
            "",
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
                f"[generated]({eval_dir}/generated_{i}.wav)"
            )
        lines.append("")
    path = os.path.join(root, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
