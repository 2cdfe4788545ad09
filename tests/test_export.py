"""Tests for pwavenet.jobs.export and launch.export: the exported student, loaded in a fresh
process with jax alone, gives the Vocoder API's audio for the same noise, at any batch and
length."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pwavenet.jobs import export
from pwavenet import vocoder as vocoder_lib
import vocoder_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: jax and numpy only.
SERVE = """
import json, sys
import jax, numpy as np
artifact, inputs, outputs = sys.argv[1:]
manifest = json.load(open(artifact + ".json"))
exported = jax.export.deserialize(bytearray(open(artifact, "rb").read()))
data = np.load(inputs)
results = {}
for case in sorted({k.split("/")[0] for k in data.files}):
    args = [data[f"{case}/{spec['name']}"] for spec in manifest["inputs"]]
    results[case] = np.asarray(exported.call(*args))
np.savez(outputs, **results)
assert not any(m.startswith("pwavenet") for m in sys.modules), "pwavenet was imported"
print("served", sorted(results))
"""


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config, params = vocoder_helpers.teacher_config_and_params()
    teacher_dir, student_dir, _ = vocoder_helpers.write_workdirs(root, config, params)
    # A student with the synthesis filter (its frame-by-frame scan must export too).
    lpc_config = vocoder_helpers.student_config(lpc_order=6, teacher_workdir=teacher_dir)
    lpc_params = vocoder_helpers.random_params(vocoder_lib.build_model(lpc_config), 0.5, seed=4)
    lpc_dir = str(root / "student_lpc")
    vocoder_helpers.write_workdir(lpc_dir, lpc_config, lpc_params, lpc_params)
    return teacher_dir, student_dir, lpc_dir


def _serve(artifact, cases, tmp_path):
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    flat = {f"{case}/{k}": v for case, arrays in cases.items() for k, v in arrays.items()}
    np.savez(inputs, **flat)
    run = subprocess.run(
        [sys.executable, "-c", SERVE, artifact, str(inputs), str(outputs)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(np.load(outputs))


def _cases(v, speakers):
    """Two batches: 2 utterances of 150 frames (several of the vocoder's pieces) and one of
    5, with the noise vocode draws for seeds 3, 4 and 9."""
    rng = np.random.default_rng(0)
    cases, expected = {}, {}
    for case, (batch, frames, seed) in {"long": (2, 150, 3), "short": (1, 5, 9)}.items():
        mel = rng.normal(-2, 1.5, (batch, frames, v.n_mels)).astype(np.float32)
        arrays = {"mel": mel, "noise": v.noise(frames, seed=seed, batch=batch)}
        ids = np.array(speakers[:batch], np.int32)
        if v.num_speakers:
            arrays["speaker"] = ids
        cases[case] = arrays
        expected[case] = v.vocode(mel, speaker=ids if v.num_speakers else None, seed=seed)
    return cases, expected


def test_the_exported_student_serves_the_apis_audio_from_the_command_line(workdirs, tmp_path):
    _, student_dir, _ = workdirs
    artifact = str(tmp_path / "out" / "student.jax")
    run = subprocess.run(
        [sys.executable, "-m", "launch.export", f"--workdir={student_dir}", f"--output={artifact}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Wrote" in run.stdout
    manifest = json.load(open(artifact + ".json"))
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
    assert (manifest["sample_rate"], manifest["hop_length"], manifest["n_mels"]) == (22050, 64, 16)
    assert manifest["mel"]["n_fft"] == 256 and manifest["mel"]["log_floor"] == 1e-5
    assert [i["name"] for i in manifest["inputs"]] == ["mel", "noise", "speaker"]
    assert manifest["inputs"][1]["distribution"] == "logistic(0, 1)"  # the tiny student's base
    v = vocoder_lib.load_vocoder(student_dir)
    cases, expected = _cases(v, [5, 2])
    served = _serve(artifact, cases, tmp_path)
    for case in cases:
        assert served[case].shape == expected[case].shape
        np.testing.assert_allclose(served[case], expected[case], atol=1e-5, rtol=0)
    assert np.std(expected["long"]) > 0.01


def test_a_student_with_the_synthesis_filter_exports_too(workdirs, tmp_path):
    _, _, lpc_dir = workdirs
    artifact = str(tmp_path / "lpc.jax")
    export.export_student(lpc_dir, artifact, platforms=("cpu",))
    v = vocoder_lib.load_vocoder(lpc_dir)
    cases, expected = _cases(v, [1, 7])
    served = _serve(artifact, cases, tmp_path)
    for case in cases:
        scale = np.std(expected[case])
        assert scale > 1e-3
        np.testing.assert_allclose(served[case], expected[case], atol=5e-3 * scale, rtol=0)


def test_a_teacher_or_an_unknown_platform_is_refused(workdirs, tmp_path):
    teacher_dir, student_dir, _ = workdirs
    with pytest.raises(ValueError, match="teacher's workdir; export needs a student's"):
        export.export_student(teacher_dir, str(tmp_path / "t.jax"))
    with pytest.raises(ValueError, match=r"choose among \('cpu', 'cuda', 'tpu'\)"):
        export.export_student(student_dir, str(tmp_path / "s.jax"), platforms=("rocm",))
    assert not os.listdir(tmp_path)
