"""WaveNet teacher: `python -m launch.train_teacher --config=configs/teacher.py:<variant> --workdir=DIR`.

Variants
  tiny      a few hundred parameters' worth of WaveNet on short crops, for tests
  espeak    the embedded espeak-ng corpus on a CPU (the README's default)
  ljspeech  the Parallel WaveNet layout: 3 cycles of 10 layers, kernel 3, 10-component MoL
  clarinet  ljspeech with a single Gaussian output (the ClariNet teacher)
  mulaw     ljspeech with a 256-way mu-law softmax output
  vctk      the ljspeech layout on VCTK at 48 kHz, 110 speakers, with HiFi-GAN's mel definition
            (mel.preset 'hifigan', pwavenet.audio.mel_settings('hifigan', 48000)): mels that
            TTS models in that definition predict vocode as they are

`model` is everything `pwavenet.models.wavenet.WaveNet(config.model)` needs; its `n_mels` is linked
to `mel.n_mels`, so overriding `--config.mel.n_mels` changes both. The product of
`model.upsample_strides` must equal `mel.hop_length` (checked when the model is built).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "espeak"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    # Fine-tuning: a workdir whose latest checkpoint's weights (EMA unless init_from_ema=False)
    # start this run, when this workdir has no checkpoint of its own; its `model` section
    # must equal this one (pwavenet.training.check_init_from).
    c.init_from = ""
    c.init_from_ema = True

    # Audio features: the one log-mel definition (pwavenet.audio.log_mel_spectrogram).
    c.mel = ml_collections.ConfigDict()
    c.mel.sample_rate = 22050
    c.mel.n_fft = 1024
    c.mel.win_length = 1024
    c.mel.hop_length = 256
    c.mel.n_mels = 80
    c.mel.fmin = 0.0
    c.mel.fmax = 8000.0
    c.mel.log_floor = 1e-5  # log(max(mel, floor))
    c.mel.preset = "pwavenet"  # pwavenet | hifigan | espnet (pwavenet.audio.MEL_PRESETS)
    c.mel.log_base = 0.0  # 0: the preset's (e; 10 for espnet)
    # A TTS project's config (HiFi-GAN config.json, Parallel WaveGAN / ESPnet2 config.yml) whose
    # feature settings replace this section's when the job starts (pwavenet.audio.mel_files).
    c.mel.from_file = ""
    # none | meanvar: the models see (log-mel - mean) / scale per band, with statistics of the
    # training split saved in the workdir (mel_stats.npz; a student uses its teacher's).
    c.mel.normalization = "none"

    # Data: a tfds data set of utterances with features {audio: int16 (T,), speaker: int64}.
    c.data = ml_collections.ConfigDict()
    c.data.name = "espeak_corpus"  # espeak_corpus | wav_folder | kaldi_dir | ljspeech | vctk
    c.data.data_dir = ""  # tfds data_dir; "" -> tfds default (~/tensorflow_datasets)
    # wav_folder: the folder of .wav files (speaker subfolders optional); kaldi_dir: the data
    # directory holding wav.scp (segments, utt2spk optional) or split subfolders of them.
    c.data.manual_dir = ""
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.crop_samples = 7680  # multiple of mel.hop_length
    c.data.shuffle_buffer = 512
    c.data.bad_audio = "skip"  # skip | fail: what to do with unusable utterances (see README)
    # audio: mels computed from the audio; file: each wav's name.npy beside it (wav_folder only),
    # e.g. a TTS model's teacher-forced mels in this config's mel definition, for fine-tuning.
    c.data.mel_source = "audio"
    # file: frames the .npy may differ from len(wav) // hop by (both are cut to the shorter),
    # and what to do beyond that: fail (an error naming the file), skip it, or trim anyway.
    c.data.mel_length_tolerance = 2
    c.data.mel_length_policy = "fail"

    c.model = ml_collections.ConfigDict()
    c.model.output = "mol"  # mol | gaussian | logistic | mulaw (pwavenet.models.distributions)
    c.model.num_mixtures = 10
    c.model.log_scale_min = -9.0
    # gaussian | logistic: the log-scale's ceiling (0: a scale of at most 1, the audio's range).
    c.model.log_scale_max = 0.0
    c.model.num_cycles = 3
    c.model.layers_per_cycle = 10  # dilations 1, 2, ..., 2^(layers_per_cycle - 1) per cycle
    c.model.kernel_size = 3
    c.model.residual_channels = 64
    c.model.gate_channels = 128
    c.model.skip_channels = 64
    c.model.n_mels = c.mel.get_ref("n_mels")  # 0 disables local conditioning
    c.model.upsample_strides = (16, 16)  # product == mel.hop_length
    c.model.upsample_kernel_multiple = 2  # transposed-conv kernel = multiple * stride
    # mel.normalization='meanvar': the training split's per-band log-mel mean and scale, set by
    # the job (the workdir's mel_stats.npz); the conditioning network sees (mel - mean) / scale.
    c.model.mel_mean = ()
    c.model.mel_scale = ()
    c.model.num_speakers = 0  # > 0 enables a speaker embedding (global conditioning)
    c.model.speaker_embedding_dim = 16
    # > 0: the output's mean is an order-lpc_order linear prediction from the past samples,
    # with a fixed predictor computed from each mel frame (pwavenet.audio.lpc), plus the network's
    # output, which then models the excitation. Orders above the pitch period (320 at 22.05
    # kHz covers pitch down to 69 Hz) with no lag window carry the harmonics the mel resolves.
    c.model.lpc_order = 0
    c.model.lpc_lag_window_hz = 0.0  # Gaussian lag window on the autocorrelation; 0: none
    c.model.lpc_noise_floor = 1e-4  # added power, relative to the mean (-40 dB)
    c.model.lpc_mel = ml_collections.ConfigDict()  # the mel definition the predictor inverts
    for field in ("sample_rate", "n_fft", "n_mels", "fmin", "fmax"):
        setattr(c.model.lpc_mel, field, c.mel.get_ref(field))
    c.model.dtype = "float32"  # compute dtype; bfloat16 on accelerators; params stay float32
    c.model.remat = False  # rematerialise each residual layer in the backward pass

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 8  # global, over all devices and hosts
    # Examples per device taken at a time, gradients averaged (0: the device's whole batch).
    # On a CPU, 1 keeps each operation's arrays in the last-level cache (BUILD.md).
    c.train.microbatch_size = 0
    c.train.steps = 200_000
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 1000
    c.train.decay_steps = 0  # length of the warmup + cosine schedule; 0: train.steps
    c.train.end_learning_rate_fraction = 0.05  # cosine decay to this fraction of the peak
    c.train.grad_clip = 1.0
    # > 0: the network and the linear prediction see the crop plus Gaussian noise of this
    # standard deviation relative to the crop's RMS, while the loss scores the clean crop
    # (LPCNet's noise injection): training then resembles generation, where every sample
    # fed back carries the sampling noise of earlier steps.
    c.train.input_noise = 0.0
    c.train.max_skipped_in_a_row = 10  # non-finite steps in a row before the job stops
    c.train.ema_decay = 0.9999
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.train.eval_batches = 4
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 3
    c.train.audio_every = 10_000  # generated validation audio and mel images in TensorBoard
    c.train.audio_seconds = 1.0

    c.eval = ml_collections.ConfigDict()
    c.eval.num_utterances = 2  # the listening set: wavs and spectrograms
    c.eval.max_seconds = 2.0  # the listening set's length
    c.eval.quality_utterances = 0  # utterances the quality table scores; 0: the whole split
    c.eval.quality_max_seconds = 0.0  # > 0: each scored utterance cut to this length
    c.eval.batch_size = 8  # utterances generated at a time for the quality table

    if variant == "ljspeech":
        c.data.name = "ljspeech"
    elif variant == "clarinet":
        c.data.name = "ljspeech"
        c.model.output = "gaussian"
        c.model.log_scale_min = -7.0
    elif variant == "mulaw":
        c.data.name = "ljspeech"
        c.model.output = "mulaw"
    elif variant == "vctk":
        c.data.name = "vctk"
        # pwavenet.audio.mel_settings("hifigan", 48000), written out so that loading a config
        # imports no library (tests/test_mel.py checks that they agree).
        c.mel.preset = "hifigan"
        c.mel.sample_rate = 48000
        c.mel.n_fft = 4096
        c.mel.win_length = 2400
        c.mel.hop_length = 600
        c.mel.fmax = 24000.0
        c.model.upsample_strides = (24, 25)  # pwavenet.audio.upsample_strides(600)
        c.model.num_speakers = 110
        c.data.crop_samples = 16800  # 28 hops, 0.35 s as ljspeech's 7680 samples at 22.05 kHz
    elif variant == "espeak":
        # Sized for about ten minutes on two CPU cores. A single Gaussian per step (as in
        # ClariNet) learns faster here than the 16-bit MoL (log-mel L1 2.0 after 600 steps vs
        # 2.5 after 1200) and gives the student a closed-form KL to distill.
        c.model.output = "gaussian"
        c.model.log_scale_min = -7.0
        c.model.num_cycles = 2
        c.model.layers_per_cycle = 8
        c.model.kernel_size = 2
        c.model.residual_channels = 32
        c.model.gate_channels = 64
        c.model.skip_channels = 32
        c.model.num_speakers = 8
        # Without it, 600-1200 steps give noise shaped by the mel's envelope but no harmonics
        # (periodicity of voiced frames 0.2-0.3 against 0.74 for the reference); with it,
        # 0.54 and a log-mel L1 of 1.0 (2.0 without) after 600 steps.
        c.model.lpc_order = 320
        c.data.crop_samples = 2560
        c.train.batch_size = 8
        c.train.steps = 1200
        c.train.learning_rate = 2e-3
        # Gradient norms run from about 10 to 2000 here; clipping them at 1 made every step a
        # unit step. At 100 the validation NLL after 600 steps improved by 0.4 nats/sample.
        c.train.grad_clip = 100.0
        c.train.warmup_steps = 100
        c.train.ema_decay = 0.99
        c.train.log_every = 50
        c.train.eval_every = 400
        c.train.checkpoint_every = 300
        c.train.audio_every = 600
    elif variant == "tiny":
        c.mel.n_fft = 256
        c.mel.win_length = 256
        c.mel.hop_length = 64
        c.mel.n_mels = 16
        c.model.num_cycles = 2
        c.model.layers_per_cycle = 3
        c.model.kernel_size = 2
        c.model.residual_channels = 8
        c.model.gate_channels = 16
        c.model.skip_channels = 8
        c.model.num_mixtures = 3
        c.model.upsample_strides = (8, 8)
        c.model.num_speakers = 8
        c.model.speaker_embedding_dim = 4
        c.data.name = "espeak_corpus/small"
        c.data.crop_samples = 512
        c.data.shuffle_buffer = 16
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
        c.eval.num_utterances = 2
        c.eval.max_seconds = 0.05
        c.eval.quality_utterances = 2
        c.eval.quality_max_seconds = 1.0
        c.eval.batch_size = 2
    else:
        raise ValueError(
            f"Unknown variant {variant!r} of configs/teacher.py; use one of "
            "tiny, espeak, ljspeech, clarinet, mulaw, vctk."
        )
    return c
