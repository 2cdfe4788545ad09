"""The teacher's training loop and evaluation: pmap vs one device, checkpoints and resume,
refusals, and the files evaluation writes."""

import json
import os
import shutil

from flax import jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import teacher as teacher_config
from pwavenet.jobs import evaluate
from pwavenet import evaluation
from pwavenet.models import builders, losses
from pwavenet.jobs import teacher as teacher_job
from pwavenet import training
from pwavenet.models import wavenet


@pytest.fixture(scope="module")
def data_dir(espeak_small_data_dir):
    return espeak_small_data_dir


def _config(data_dir, **overrides):
    config = teacher_config.get_config("tiny")
    config.data.data_dir = data_dir
    config.update_from_flattened_dict(overrides)
    return config


def _random_batch(config, batch, seed=0):
    rng = np.random.default_rng(seed)
    frames = config.data.crop_samples // config.mel.hop_length
    return {
        "audio": rng.uniform(-0.5, 0.5, (batch, config.data.crop_samples)).astype(np.float32),
        "mel": rng.normal(-4.0, 1.0, (batch, frames, config.mel.n_mels)).astype(np.float32),
        "speaker": rng.integers(0, config.model.num_speakers, batch).astype(np.int32),
    }


def test_pmapped_step_equals_a_single_device_step():
    config = _config("")
    model = builders.build_teacher(config)
    tx, schedule = training.create_optimizer(config.train)
    params = builders.init_teacher_params(model, config, jax.random.PRNGKey(0))
    loss_fn = lambda p, b, rng: losses.nll_metrics(model, config, p, b)
    batch = _random_batch(config, 8)

    def fresh_state():
        return training.create_train_state(
            jax.random.PRNGKey(1), jax.tree.map(jnp.array, params), tx
        )

    # Two steps so Adam's second-moment state matters too.
    single = training.make_train_step(loss_fn, tx, schedule, 0.9, pmap=False)
    state1 = fresh_state()
    for _ in range(2):
        state1, metrics1 = single(state1, batch)
    assert jax.local_device_count() == 8
    multi = training.make_train_step(loss_fn, tx, schedule, 0.9)
    state8 = jax_utils.replicate(fresh_state())
    for _ in range(2):
        state8, metrics8 = multi(state8, training.shard(batch))
    state8 = training.first_replica(state8)
    metrics8 = training.first_replica(metrics8)
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        state8.params,
        state1.params,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        state8.ema_params,
        state1.ema_params,
    )


def test_noise_injection_scores_the_clean_crop_from_a_noisy_past():
    """train.input_noise: each crop's noise is its own, of standard deviation level x the
    crop's RMS (a Monte Carlo check: 4 crops x 512 samples, the sample std within 10%), and the
    loss is the NLL of the clean crop under the outputs computed from the noisy one."""
    level = 0.05
    config = teacher_config.get_config("tiny")
    batch = _random_batch(config, 4)
    rngs = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4))
    noisy = np.asarray(teacher_job.noisy_input(rngs, jnp.asarray(batch["audio"]), level))
    noise = noisy - batch["audio"]
    rms = np.sqrt(np.mean(batch["audio"] ** 2, axis=1))
    np.testing.assert_allclose(noise.std(axis=1) / rms, level, rtol=0.1)
    assert abs(np.corrcoef(noise[0], noise[1])[0, 1]) < 0.15  # independent crops

    model = builders.build_teacher(config)
    params = builders.init_teacher_params(model, config, jax.random.key(1))
    loss, _ = losses.nll_metrics(model, config, params, batch, audio_in=jnp.asarray(noisy))
    outputs = model.apply({"params": params}, noisy, batch["mel"], batch["speaker"])
    by_hand = -np.mean(wavenet.log_likelihood(outputs, batch["audio"], model.distribution))
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
    clean = model.apply({"params": params}, batch["audio"], batch["mel"], batch["speaker"])
    assert np.max(np.abs(np.asarray(outputs) - np.asarray(clean))) > 1e-3  # the noise counts


def test_global_batch_must_divide_the_device_count():
    with pytest.raises(ValueError, match=r"batch_size=12 .* divisible .* 8"):
        training.check_batch_size(12)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """The tiny teacher trained by train_and_evaluate for its 6 steps, once for the module:
    its workdir, copied by each test that changes it."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    teacher_job.train_and_evaluate(_config(data_dir), workdir)
    return workdir


@pytest.mark.slow
def test_checkpoints_round_trip_and_training_resumes(data_dir, trained, tmp_path):
    config = _config(data_dir)
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["model"]["residual_channels"] == config.model.residual_channels
    params6, step = training.restore_params(workdir, ema=False)
    assert step == 6

    # Asking for more steps resumes from step 6 (it does not start over): steps 7..9 only.
    longer = _config(data_dir, **{"train.steps": 9})
    teacher_job.train_and_evaluate(longer, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6", "9"]
    params9, _ = training.restore_params(workdir, ema=False)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params6, params9)
    assert max(jax.tree.leaves(moved)) > 0

    # The restored tree is exactly what was saved: save it again elsewhere and compare.
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.abspath(tmp_path / "copy")) as mngr:
        mngr.save(1, args=ocp.args.StandardSave({"p": params9}))
        mngr.wait_until_finished()
        again = mngr.restore(1, args=ocp.args.StandardRestore())["p"]
    jax.tree.map(np.testing.assert_array_equal, again, params9)

    # A different architecture in the same workdir is refused, naming the field and values.
    wider = _config(data_dir, **{"model.residual_channels": 16})
    with pytest.raises(ValueError, match=r"model.residual_channels: saved 8, now 16"):
        teacher_job.train_and_evaluate(wider, workdir)


@pytest.mark.slow
def test_evaluation_writes_its_report_audio_and_plot(data_dir, trained, tmp_path):
    import pystoi
    import soundfile

    from pwavenet.data import whole_utterances
    from pwavenet.evaluation import quality

    config = _config(data_dir)
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    report = evaluate.evaluate(workdir, speed_batch_sizes=(1, 2), speed_seconds=0.02)
    out = os.path.join(workdir, "eval_6")
    for name in (
        "report.json",
        "mels.png",
        "reference_0.wav",
        "generated_1.wav",
        "griffin_lim_1.wav",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert sorted(os.listdir(out)) == report["files"]
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f) == report
    assert np.isfinite(report["validation_nll"])
    assert [s["batch_size"] for s in report["generation_speed"]] == [1, 2]

    # The listening set's L1, recomputed from the wavs (16-bit: quiet samples move the logs).
    sr = config.mel.sample_rate
    wav = {
        name: np.stack(
            [
                soundfile.read(os.path.join(out, f"{name}_{i}.wav"), dtype="float32")[0]
                for i in (0, 1)
            ]
        )
        for name in ("reference", "generated")
    }
    expected = evaluation.log_mel_l1(config, wav["generated"], wav["reference"])
    np.testing.assert_allclose(report["log_mel_l1_per_utterance"], expected, rtol=0.02)
    assert report["log_mel_l1"] > 0.1

    # The quality table: the configured utterances of the validation split, every row.
    q = report["quality"]
    utterances = whole_utterances.split_utterances(config, "validation", 2, max_seconds=1.0)
    assert q["split"] == "validation" and q["num_utterances"] == 2
    assert set(q["mean"]) == {"reference", "griffin_lim", "teacher"}
    assert [r["id"] for r in q["per_utterance"]["teacher"]] == [u["id"] for u in utterances]
    for system, rows in q["per_utterance"].items():
        for name in quality.MEASURES:
            values = [r[name] for r in rows if r[name] is not None]
            mean = q["mean"][system][name]
            assert mean == pytest.approx(np.mean(values)) if values else mean is None
    assert q["mean"]["reference"]["stoi"] == pytest.approx(1.0)
    assert q["mean"]["reference"]["mcd_db"] == 0.0
    # The worst utterance of each system: its peak and its teacher NLL.
    for system, rows in q["per_utterance"].items():
        assert q["mean"][system]["worst_peak"] == max(r["peak"] for r in rows)
        assert q["mean"][system]["worst_teacher_nll"] == max(r["teacher_nll"] for r in rows)
    assert q["mean"]["reference"]["worst_peak"] == pytest.approx(
        max(float(np.max(np.abs(u["audio"]))) for u in utterances)
    )
    # Griffin-Lim's STOI, recomputed with pystoi directly on a fresh reconstruction.
    u = utterances[1]
    gl = quality.griffin_lim(u["mel"], config.mel, len(u["audio"]))
    assert q["per_utterance"]["griffin_lim"][1]["stoi"] == pytest.approx(
        pystoi.stoi(u["audio"], gl, sr), abs=1e-6
    )
    # The teacher's NLL of the real audio, batched with padding, equals a pass over each
    # utterance alone (the model is causal and the padding is masked out).
    model = builders.build_teacher(config)
    params, _ = training.restore_params(workdir)
    for i, u in enumerate(utterances):
        outputs = model.apply(
            {"params": params}, u["audio"][None], u["mel"][None], np.array([u["speaker"]])
        )
        alone = float(
            -np.mean(
                np.asarray(wavenet.log_likelihood(outputs, u["audio"][None], model.distribution))
            )
        )
        assert q["per_utterance"]["reference"][i]["teacher_nll"] == pytest.approx(alone, abs=1e-3)
    # Deterministic for a checkpoint and seed.
    again = evaluate.evaluate(workdir, output_dir=str(tmp_path / "again"), speed_batch_sizes=())
    assert again["quality"]["per_utterance"] == q["per_utterance"]


def test_evaluating_a_workdir_without_checkpoints_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved config"):
        evaluate.evaluate(str(tmp_path))
    training.save_config(_config(""), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        evaluate.evaluate(str(tmp_path))


def test_upsampling_must_match_the_hop():
    config = _config("", **{"mel.hop_length": 128})
    with pytest.raises(ValueError, match=r"upsample_strides=\(8, 8\).*hop_length=128"):
        builders.build_teacher(config)


def test_an_unknown_config_field_is_an_error_before_anything_is_written(tmp_path):
    """The entry points lock their configs: a misspelt override fails with the field's name
    and the likely intended one, and creates no workdir."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    workdir = tmp_path / "never"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.train_teacher",
            "--config=configs/teacher.py:tiny",
            f"--workdir={workdir}",
            "--config.model.residual_chanels=4",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "residual_chanels" in result.stderr and "residual_channels" in result.stderr
    assert not workdir.exists()
