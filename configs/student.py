"""Parallel WaveNet student: `python -m launch.distill --config=configs/student.py:<variant>
--workdir=DIR --config.teacher_workdir=TDIR`.

Variants (each pairs with the teacher variant of the same name in configs/teacher.py, whose
`mel`, `data` and `eval` sections it starts from; the job checks them against the teacher's
saved config and refuses a mismatch)
  tiny      two tiny flows on the tiny teacher (a 3-component MoL: Monte Carlo KL), for tests
  espeak    the embedded corpus on a CPU (the README's default): Gaussian base, closed-form KL
  ljspeech  the Parallel WaveNet layout: logistic base, flows of 10, 10, 10 and 30 layers,
            width 64, Monte Carlo cross-entropy against the 10-component MoL teacher
  clarinet  ClariNet: Gaussian base, six flows of 10 layers, closed-form KL and regularizer
  vctk      the ljspeech student on the vctk teacher (48 kHz, HiFi-GAN's mel definition)
"""

import ml_collections

try:  # a checkout: configs/ beside pwavenet/
    from configs import teacher as teacher_configs
except ImportError:  # installed: the configs ship in the package as pwavenet.configs
    from pwavenet.configs import teacher as teacher_configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "espeak"
    if variant not in ("tiny", "espeak", "ljspeech", "clarinet", "vctk"):
        raise ValueError(
            f"Unknown variant {variant!r} of configs/student.py; use one of "
            "tiny, espeak, ljspeech, clarinet, vctk."
        )
    t = teacher_configs.get_config(variant)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.teacher_workdir = ""  # the trained teacher's workdir (required)
    # Fine-tuning: a student workdir whose weights (EMA unless init_from_ema=False) start this
    # run when this workdir has no checkpoint; same `model` section required. With
    # model.upsampler='frozen' the upsampler is still this run's teacher's.
    c.init_from = ""
    c.init_from_ema = True

    c.mel = t.mel
    c.data = t.data
    c.eval = t.eval

    c.model = ml_collections.ConfigDict()
    c.model.base = "logistic"  # logistic (Parallel WaveNet) | gaussian (ClariNet)
    c.model.flow_layers = (10, 10, 10, 30)  # layers of each flow, first flow first
    c.model.layers_per_cycle = 10  # dilations 1 .. 2^(layers_per_cycle - 1), repeated
    c.model.kernel_size = 3
    c.model.residual_channels = 64
    c.model.gate_channels = 128
    c.model.skip_channels = 64
    c.model.n_mels = c.mel.get_ref("n_mels")
    c.model.upsample_strides = tuple(t.model.upsample_strides)
    c.model.upsample_kernel_multiple = t.model.upsample_kernel_multiple
    c.model.mel_mean = ()  # the teacher's mel statistics, set by the job (configs/teacher.py)
    c.model.mel_scale = ()
    # frozen: the teacher's upsampler, not trained; fine_tune: initialised from the teacher's
    # and trained; own: a new one.
    c.model.upsampler = "frozen"
    c.model.cond_channels = 0  # > 0: one shared 1x1 from n_mels to this width before the flows
    c.model.num_speakers = t.model.num_speakers
    c.model.speaker_embedding_dim = t.model.speaker_embedding_dim
    # The untrained student is about z * exp(init_log_scale): base noise at speech level.
    c.model.init_log_scale = -3.0
    c.model.flow_log_scale_min = -7.0  # smooth clamp of each flow's log-scale
    # noise: the flows' output is the whole excitation. pulses: a pitch-pulse train estimated
    # from the mel (pwavenet.audio.excitation) is added to it, times a learned gain that starts at
    # pulse_gain, and the flows' noise is scaled by a learned gain to the power of the mel's
    # voicing (0..1), starting at voiced_noise_gain (needs the synthesis filter, model.lpc_order
    # > 0).
    c.model.excitation = "noise"
    c.model.pulse_gain = 1.0
    c.model.voiced_noise_gain = 1.0
    # The pulses' F0 and voicing: estimate (pwavenet.audio.excitation; reads the whole mel, so
    # such a student does not stream) or learned (the predictor fitted by launch.fit_pitch in
    # pitch_workdir, whose architecture the pitch_* fields give: configs/pitch.py's; streams).
    c.model.pitch_source = "estimate"
    c.model.pitch_channels = 64
    c.model.pitch_dilations = (1, 2, 4, 8, 1)
    c.model.pitch_speaker_dim = 16
    c.pitch_workdir = ""
    c.model.flow_log_scale_max = 3.0
    c.model.output_init_scale = 0.01  # std of each flow's output kernel at initialisation
    # > 0: a last, fixed layer after the flows (pwavenet.models.iaf): u = g * flows(z) with each mel
    # frame's excitation level g, then the all-pole synthesis x_t = u_t + sum_j a_j x_{t-1-j}
    # with the frame's predictor (pwavenet.audio.lpc: exactly the teacher's, so the teacher's
    # residual of x is u). The flows then model the excitation, as the teacher's network
    # does. Defaults to the teacher's predictor settings.
    c.model.lpc_order = t.model.lpc_order
    c.model.lpc_lag_window_hz = t.model.lpc_lag_window_hz
    c.model.lpc_noise_floor = t.model.lpc_noise_floor
    c.model.lpc_mel = ml_collections.ConfigDict()
    for field in ("sample_rate", "n_fft", "win_length", "n_mels", "fmin", "fmax"):
        setattr(c.model.lpc_mel, field, c.mel.get_ref(field))
    c.model.dtype = "float32"
    c.model.remat = False
    # > 0: parallel synthesis runs the flows in windows of this many samples, each with the
    # flows' receptive field of past noise (pwavenet.models.iaf.windowed_flows; the output is the
    # same). Narrow flows on a CPU run about twice as fast in windows of 4096; 0: one pass.
    c.model.synthesis_chunk = 0

    c.distill = ml_collections.ConfigDict()
    c.distill.kl = "auto"  # auto | closed_form | monte_carlo (auto: closed form if both Gaussian)
    c.distill.num_draws = 16  # Monte Carlo draws per step for the cross-entropy
    c.distill.log_scale_min = -7.0  # floor of both log-scales in the closed-form KL
    c.distill.regularizer_weight = 4.0  # closed form: weight of (log S - log s_T)^2
    c.distill.kl_weight = 1.0  # weight of the KL to the teacher (0: spectral losses alone)
    c.distill.power_weight = 1.0
    # > 0: adds spectral convergence + log STFT magnitude (Parallel WaveGAN's auxiliary loss)
    # at the same resolutions, times this weight (pwavenet.distillation.spectral_losses).
    c.distill.spectral_weight = 0.0
    # (n_fft, hop, window) of each STFT resolution of the power loss.
    c.distill.stft_resolutions = ((1024, 256, 1024), (512, 128, 512), (256, 64, 256))
    # < 1: the teacher's Gaussian scales times voiced_temperature ** voicing (the mel's, 0..1)
    # in the KL, so the student learns the teacher sampled colder in voiced frames.
    c.distill.voiced_temperature = 1.0
    c.distill.contrastive_weight = 0.0  # > 0 subtracts the KL under a mismatched mel

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 8
    # Examples per device taken at a time, gradients averaged (0: the device's whole batch).
    # On a CPU, 1 keeps each operation's arrays in the last-level cache (BUILD.md).
    c.train.microbatch_size = 0
    c.train.steps = 200_000
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 1000
    c.train.decay_steps = 0  # length of the warmup + cosine schedule; 0: train.steps
    c.train.end_learning_rate_fraction = 0.05
    c.train.grad_clip = 1.0
    c.train.max_skipped_in_a_row = 10
    c.train.ema_decay = 0.9999
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.train.eval_batches = 4
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 3
    c.train.audio_every = 10_000
    c.train.audio_seconds = 1.0

    if variant == "clarinet":
        c.model.base = "gaussian"
        c.model.flow_layers = (10,) * 6
    elif variant == "espeak":
        # Sized for a few minutes on two CPU cores and synthesis over 100 times faster than the
        # teacher's generation (102x, 113x and 124x measured, with the filters designed on a
        # second thread: pwavenet.models.iaf.sample). The synthesis filter (the teacher's mel
        # predictor, see model.lpc_order) makes the envelope and the harmonics, so the flow
        # only models the excitation: one flow of 4 narrow layers (8/16/8 channels), kernel 2,
        # on its own upsampler of an 8-channel projection of the mel, run in windows of 4096
        # samples. Measured after 500 steps on one teacher (log-mel L1 / the teacher's, KL in
        # nats/sample, student/teacher speed): this one 0.91, 0.070, 76x (on one thread).
        # Before the windowed flows and the faster filter analysis: two flows of 16/32/16
        # channels 0.91, 0.047, 38x; three 6-layer flows on the teacher's 80-channel upsampler
        # 0.90, 0.093, 10x; without the synthesis filter 2.5, 1.25, 20x.
        c.model.base = "gaussian"
        c.model.flow_layers = (4,)
        c.model.layers_per_cycle = 4
        c.model.kernel_size = 2
        c.model.residual_channels = 8
        c.model.gate_channels = 16
        c.model.skip_channels = 8
        c.model.cond_channels = 8
        c.model.upsampler = "own"
        c.model.synthesis_chunk = 4096
        # The synthesis filter's gain g is the residual level the mel implies; the teacher's
        # scale is about 0.8 g on this corpus, so the flows start there (log 0.8 = -0.22).
        c.model.init_log_scale = -0.25 if c.model.lpc_order else -3.0
        c.train.batch_size = 8
        c.train.steps = 500
        c.train.learning_rate = 2e-3
        c.train.warmup_steps = 50
        c.train.ema_decay = 0.99
        c.train.log_every = 50
        c.train.eval_every = 250
        c.train.checkpoint_every = 250
        c.train.audio_every = 500
    elif variant == "tiny":
        c.model.flow_layers = (3, 3)
        c.model.layers_per_cycle = 3
        c.model.kernel_size = 2
        c.model.residual_channels = 8
        c.model.gate_channels = 16
        c.model.skip_channels = 8
        c.model.output_init_scale = 0.1
        c.model.pitch_channels = 16  # configs/pitch.py:tiny's predictor
        c.model.pitch_dilations = (1, 2)
        c.distill.num_draws = 4
        c.distill.stft_resolutions = ((256, 64, 256), (128, 32, 128))
        c.train.batch_size = 8
        c.train.steps = 6
        c.train.warmup_steps = 2
        c.train.ema_decay = 0.9
        c.train.log_every = 2
        c.train.eval_every = 3
        c.train.eval_batches = 1
        c.train.checkpoint_every = 3
        c.train.audio_every = 6
        c.train.audio_seconds = 0.05
    return c
