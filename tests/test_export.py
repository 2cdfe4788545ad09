"""Tests for pwavenet.jobs.export and launch.export: the exported student, loaded in a fresh
process with its runtime alone (jax; TensorFlow; onnxruntime), gives the Vocoder API's audio
for the same noise, at any batch and length (the ONNX model: at its fixed shape)."""

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


# Fresh processes with one runtime each and numpy: importing jax, flax or pwavenet fails there.
REFUSE_JAX = """
import importlib.abc, sys


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "pwavenet"):
            raise ImportError(f"{name} is not available to this server")


sys.meta_path.insert(0, Refuse())
"""

SERVE_SAVED_MODEL = REFUSE_JAX + """
import time
import numpy as np, tensorflow as tf
artifact, inputs, outputs = sys.argv[1:]
start = time.perf_counter()
signature = tf.saved_model.load(artifact).signatures["serving_default"]
print("load_seconds", time.perf_counter() - start)
data = np.load(inputs)
results = {}
for case in sorted({k.split("/")[0] for k in data.files}):
    names = [k.split("/")[1] for k in data.files if k.startswith(case + "/")]
    feed = {n: tf.constant(data[f"{case}/{n}"]) for n in names}
    results[case] = signature(**feed)["audio"].numpy()
np.savez(outputs, **results)
"""

SERVE_ONNX = REFUSE_JAX + """
import time
import numpy as np, onnxruntime
artifact, inputs, outputs = sys.argv[1:]
start = time.perf_counter()
session = onnxruntime.InferenceSession(artifact, providers=["CPUExecutionProvider"])
print("load_seconds", time.perf_counter() - start)
data = np.load(inputs)
results = {}
for case in sorted({k.split("/")[0] for k in data.files}):
    feed = {i.name: data[f"{case}/{i.name}"] for i in session.get_inputs()}
    results[case] = session.run(["audio"], feed)[0]
np.savez(outputs, **results)
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


def _serve(artifact, cases, tmp_path, script=SERVE):
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    flat = {f"{case}/{k}": v for case, arrays in cases.items() for k, v in arrays.items()}
    np.savez(inputs, **flat)
    run = subprocess.run(
        [sys.executable, "-c", script, artifact, str(inputs), str(outputs)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(np.load(outputs))


def _cases(v, speakers, shapes=None):
    """Two batches: 2 utterances of 150 frames (several of the vocoder's pieces) and one of
    5, with the noise vocode draws for seeds 3, 4 and 9 (or `shapes`: case -> (batch,
    frames, seed))."""
    rng = np.random.default_rng(0)
    cases, expected = {}, {}
    shapes = shapes or {"long": (2, 150, 3), "short": (1, 5, 9)}
    for case, (batch, frames, seed) in shapes.items():
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


def test_the_saved_model_serves_the_apis_audio_with_tensorflow_alone(workdirs, tmp_path):
    # The student with the synthesis filter: its frame-by-frame scan must convert too.
    _, _, lpc_dir = workdirs
    artifact = str(tmp_path / "student_tf")
    manifest = export.export(lpc_dir, artifact, format="saved_model", platforms=("cpu",))
    assert manifest["format"] == "tf.saved_model" and manifest["normalization"] == "none"
    assert manifest["inputs"][1]["shape"] == ["batch", "frames * 64"]
    assert json.load(open(artifact + ".json")) == manifest
    v = vocoder_lib.load_vocoder(lpc_dir)
    # Two batch sizes and lengths (the longer one over two of the vocoder's pieces), one model.
    cases, expected = _cases(v, [1, 7], {"long": (2, 80, 3), "short": (1, 5, 9)})
    served = _serve(artifact, cases, tmp_path, SERVE_SAVED_MODEL)
    for case in cases:
        scale = np.std(expected[case])
        assert scale > 1e-3
        assert served[case].shape == expected[case].shape
        np.testing.assert_allclose(served[case], expected[case], atol=5e-3 * scale, rtol=0)


def test_the_onnx_model_serves_the_apis_audio_with_onnxruntime_alone(workdirs, tmp_path):
    _, student_dir, _ = workdirs
    artifact = str(tmp_path / "student.onnx")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.export",
            "--format=onnx",
            "--batch_size=2",
            "--frames=40",
            f"--workdir={student_dir}",
            f"--output={artifact}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(onnx, batch 2, 40 frames)" in run.stdout
    manifest = json.load(open(artifact + ".json"))
    assert manifest["inputs"][0]["shape"] == [2, 40, 16]
    assert manifest["inputs"][1]["shape"] == [2, 40 * 64]
    assert manifest["inputs"][1]["distribution"] == "logistic(0, 1)"
    assert manifest["output"]["shape"] == [2, 40 * 64]
    v = vocoder_lib.load_vocoder(student_dir)
    cases, expected = _cases(v, [3, 6], {"a": (2, 40, 11), "b": (2, 40, 0)})
    served = _serve(artifact, cases, tmp_path, SERVE_ONNX)
    for case in cases:
        assert np.std(expected[case]) > 0.01
        np.testing.assert_allclose(served[case], expected[case], atol=1e-5, rtol=0)


def test_the_onnx_model_of_a_student_with_the_synthesis_filter_serves_the_apis_audio(
    workdirs, tmp_path
):
    """The filter's FFTs are DFT matmuls in the ONNX model (pwavenet.audio.lpc.fft_as_matmul).
    Tolerance: the predictors' normal equations on these random mels have condition numbers
    up to ~4e4, so float32 rounding that differs between runtimes (~1e-7 relative, in the
    autocorrelation) moves a predictor by up to ~cond * 1e-7 and the audio by up to ~3e-3 of
    its standard deviation (measured); the same bound as the jax export's."""
    _, _, lpc_dir = workdirs
    artifact = str(tmp_path / "lpc.onnx")
    manifest = export.export(lpc_dir, artifact, format="onnx", batch_size=2, frames=24)
    assert manifest["format"] == "onnx" and manifest["step"] == 7
    assert manifest["inputs"][1]["shape"] == [2, 24 * 64]
    v = vocoder_lib.load_vocoder(lpc_dir)
    cases, expected = _cases(v, [1, 7], {"a": (2, 24, 3), "b": (2, 24, 9)})
    served = _serve(artifact, cases, tmp_path, SERVE_ONNX)
    for case in cases:
        scale = np.std(expected[case])
        assert scale > 1e-3
        assert served[case].shape == expected[case].shape
        np.testing.assert_allclose(served[case], expected[case], atol=5e-3 * scale, rtol=0)


def test_a_bad_format_is_one_line(workdirs, tmp_path):
    _, student_dir, _ = workdirs
    with pytest.raises(ValueError, match="choose among jax, saved_model, onnx, bundle"):
        export.export(student_dir, str(tmp_path / "x"), format="torchscript")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.export",
            "--format=torchscript",
            f"--workdir={student_dir}",
            f"--output={tmp_path / 'x'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert "--format" in run.stderr and "onnx" in run.stderr
    assert not os.listdir(tmp_path)
