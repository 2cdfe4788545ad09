"""The README's main command and the evaluation of its student, run as a user runs them: one
`python -m launch.pipeline` on the tiny variants (teacher, student, both evaluations,
report.md), then `python -m launch.evaluate` on that run's student, each in its own process.

report.md is read as a person reads it (its tables' numbers and its links); the student's
report.json is checked against what this file recomputes from the wavs the evaluation wrote.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from pwavenet import evaluation
from pwavenet import training
from pwavenet.models import builders, iaf, wavenet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

SPEED_SECONDS = 0.05  # launch.evaluate's generation-speed rows, kept short


def _run(module: str, *args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    # A user's process: JAX's one CPU device, not the 8 that conftest gives this one.
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    run = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, f"{module} failed:\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory, espeak_small_data_dir):
    """The root of one `launch.pipeline` run on the tiny variants."""
    root = tmp_path_factory.mktemp("pipeline") / "run"
    run = _run(
        "launch.pipeline",
        f"--workdir={root}",
        "--teacher_config=configs/teacher.py:tiny",
        "--student_config=configs/student.py:tiny",
        f"--teacher_config.data.data_dir={espeak_small_data_dir}",
        f"--student_config.data.data_dir={espeak_small_data_dir}",
        "--speed_batch_sizes=1",
    )
    assert f"Report: {root / 'report.md'}" in run.stdout
    return root


@pytest.fixture(scope="module")
def student_eval(pipeline_dir, tmp_path_factory):
    """(output folder, report.json) of `launch.evaluate` on the pipeline's student."""
    out = tmp_path_factory.mktemp("student_eval")
    run = _run(
        "launch.evaluate",
        f"--workdir={pipeline_dir / 'student'}",
        f"--output_dir={out}",
        "--speed_batch_sizes=1,2",
        f"--speed_seconds={SPEED_SECONDS}",
    )
    with open(out / "report.json") as f:
        report = json.load(f)
    assert json.loads(run.stdout[run.stdout.index("{") :]) == report  # what it printed
    return out, report


def test_a_copied_run_folder_evaluates_from_another_directory(pipeline_dir, tmp_path):
    # The pipeline named the student's teacher <run>/teacher; the copy's student must find the
    # copy's teacher (relative to itself), not the original's, from any working directory.
    copy = tmp_path / "copied" / "run"
    for model in ("teacher", "student"):
        shutil.copytree(pipeline_dir / model, copy / model, ignore=shutil.ignore_patterns("eval_*"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    out = tmp_path / "eval"
    _run(
        "launch.evaluate",
        "--workdir=../copied/run/student",
        f"--output_dir={out}",
        "--num_utterances=1",
        "--max_seconds=0.1",
        "--quality_utterances=1",
        cwd=str(cwd),
    )
    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["teacher_workdir"] == str(copy / "teacher")
    assert os.path.isfile(out / "student_0.wav")


def _tables(markdown: str) -> list[list[list[str]]]:
    """The markdown tables as lists of rows of stripped cells, header first, separator out."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", " "} for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|\b(?:nan|inf)\b", re.I)


def test_pipeline_report_has_finite_numbers_and_links_to_files_that_exist(pipeline_dir):
    path = pipeline_dir / "report.md"
    text = path.read_text()
    assert "## teacher" in text and "## student" in text
    tables = _tables(text)
    quality = [t for t in tables if t[0][0] == "system"]
    metrics = [t for t in tables if t[0] == ["metric", "value"]]
    assert len(quality) == 2 and len(metrics) == 2  # one of each per model
    systems = [[row[0] for row in t[1:]] for t in quality]
    assert systems == [
        ["reference", "griffin lim", "teacher"],
        ["reference", "griffin lim", "untrained student", "teacher", "student"],
    ]
    for table in quality:
        header = table[0]
        for row in table[1:]:
            assert len(row) == len(header), row
            for name, cell in zip(header[1:], row[1:]):
                if cell == "n/a":  # undefined: no frame voiced in both signals
                    pitch = ("F0 RMSE (cents)", "gross pitch error", "fine F0 (cents)")
                    assert name in pitch, (row[0], name)
                else:
                    assert math.isfinite(float(cell)), (row[0], name, cell)
    for table in metrics:
        for name, value in table[1:]:
            numbers = NUMBER.findall(value)
            assert numbers, (name, value)
            for number in numbers:
                assert math.isfinite(float(number.replace(",", ""))), (name, value)

    links = re.findall(r"\]\(([^)]+)\)", text)
    # Per model: the spectrogram image and each of the 2 utterances' wavs (the teacher's
    # reference, generated and Griffin-Lim; the student's reference, teacher, student and
    # Griffin-Lim).
    assert len(links) == (1 + 2 * 3) + (1 + 2 * 4), links
    for link in links:
        assert (pipeline_dir / link).is_file(), link
    assert sum(link.endswith("mels.png") for link in links) == 2


def _wav(path) -> np.ndarray:
    x, _ = soundfile.read(path, dtype="float32")
    return x


def _check_nll_of_real_audio(report, student_dir, reference):
    config = training.load_config(student_dir)
    utterances = evaluation.listening_utterances(config, None, None)
    x = jnp.asarray(utterances["audio"])
    np.testing.assert_allclose(x, reference, atol=1 / 32768)  # the wavs' audio
    teacher = training.load_teacher(config.teacher_workdir)
    mel, speaker = builders.model_inputs(teacher.config, utterances)
    forced = teacher.model.apply({"params": teacher.params}, x, mel, speaker)
    teacher_nll = wavenet.negative_log_likelihood(forced, x, teacher.model.distribution)
    assert report["teacher_nll_of_real_audio"] == pytest.approx(float(teacher_nll), rel=1e-4)

    student = builders.build_student(config)
    params, _ = training.restore_params(student_dir)
    mel, speaker = builders.model_inputs(config, utterances)
    z, _ = iaf.inverse(student, params, x, mel, speaker)
    x_again, _, log_s = iaf.forward(student, params, z, mel, speaker)
    np.testing.assert_allclose(x_again, x, atol=1e-4)
    log_p = jnp.sum(student.base_log_prob(z) - log_s, axis=-1)
    student_nll = float(-jnp.mean(log_p) / x.shape[1])
    assert math.isfinite(student_nll)
    assert report["student_nll_of_real_audio"] == pytest.approx(student_nll, rel=1e-3)


def test_student_evaluation_agrees_with_its_wavs_and_its_own_table(pipeline_dir, student_eval):
    out, report = student_eval
    config = training.load_config(str(pipeline_dir / "student"))
    assert report["kind"] == "student" and report["step"] == config.train.steps

    # The listening set's spectral distances, recomputed from the written 16-bit wavs.
    n = report["num_utterances"]
    reference = np.stack([_wav(out / f"reference_{i}.wav") for i in range(n)])
    distances = {}
    for system in ("student", "teacher"):
        audio = np.stack([_wav(out / f"{system}_{i}.wav") for i in range(n)])
        assert audio.shape == reference.shape
        distances[system] = float(np.mean(evaluation.log_mel_l1(config, audio, reference)))
        assert report[f"log_mel_l1_{system}"] == pytest.approx(distances[system], rel=0.02)
    assert report["student_to_teacher_l1_ratio"] == pytest.approx(
        distances["student"] / distances["teacher"], rel=0.04
    )

    # Both models' NLL of the real audio (the listening set, checked against the reference
    # wavs), recomputed: the teacher's by teacher forcing, the student's from the noise its
    # sequential inverse recovers, scored by one parallel forward pass (z -> x and its
    # log-scales), which must give the audio back.
    _check_nll_of_real_audio(report, str(pipeline_dir / "student"), reference)

    quality = report["quality"]
    per_utterance, means = quality["per_utterance"], quality["mean"]
    assert list(means) == ["reference", "griffin_lim", "untrained_student", "teacher", "student"]
    assert quality["num_utterances"] == len(per_utterance["student"]) == 2
    # Each mean is the mean of the utterances' values where the measure is defined.
    # The worst utterance's peak and teacher NLL are the maxima of the utterances' values.
    for system, rows in per_utterance.items():
        for measure, mean in means[system].items():
            worst = measure.startswith("worst_")
            name = {"worst_peak": "peak", "worst_teacher_nll": "teacher_nll"}.get(measure, measure)
            values = [row[name] for row in rows if row[name] is not None]
            if values:
                expected = np.max(values) if worst else np.mean(values)
                assert mean == pytest.approx(expected, rel=1e-9, abs=1e-12)
            else:
                assert mean is None
    # The reference, Griffin-Lim and teacher rows are the teacher's report's (the same
    # utterances, seed and batch size): copied, not generated and scored again.
    with open(pipeline_dir / "teacher" / f"eval_{report['teacher_step']}" / "report.json") as f:
        teacher_quality = json.load(f)["quality"]
    assert quality["copied_from_earlier"] == ["reference", "griffin_lim", "teacher"]
    for system in quality["copied_from_earlier"]:
        assert per_utterance[system] == teacher_quality["per_utterance"][system]
    # The reference against itself: perfect intelligibility and no cepstral distance.
    for row in per_utterance["reference"]:
        assert row["stoi"] == pytest.approx(1.0, abs=1e-6)
        assert row["mcd_db"] == pytest.approx(0.0, abs=1e-6)
    # Distillation changed the student: its audio, and so its scores, are not the untrained
    # student's.
    for trained, untrained in zip(per_utterance["student"], per_utterance["untrained_student"]):
        assert trained["mrstft"] != untrained["mrstft"]
        assert trained["teacher_nll"] != untrained["teacher_nll"]

    # --speed_batch_sizes and --speed_seconds on a student: a row per batch size.
    sr, hop = config.mel.sample_rate, config.mel.hop_length
    rows = report["generation_speed"]
    assert [row["batch_size"] for row in rows] == [1, 2]
    for row in rows:
        assert row["seconds_per_utterance"] == pytest.approx(
            int(SPEED_SECONDS * sr) // hop * hop / sr
        )
        for key in ("student_samples_per_second", "teacher_samples_per_second"):
            assert math.isfinite(row[key]) and row[key] > 0
        assert row["student_over_teacher"] == pytest.approx(
            row["student_samples_per_second"] / row["teacher_samples_per_second"]
        )
        for model in ("student", "teacher"):
            assert row[f"{model}_real_time_factor"] == pytest.approx(
                sr / row[f"{model}_samples_per_second"]
            )
