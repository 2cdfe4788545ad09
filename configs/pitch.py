"""The learned pitch predictor (pwavenet.models.pitch): `python -m launch.fit_pitch
--config=configs/pitch.py:<variant> --workdir=DIR`.

Variants: the teacher's (configs/teacher.py), whose `mel` and `data` sections it shares, so
that a predictor fitted on a corpus reads the mels a vocoder of that corpus is given. The fit
reads harvest's F0 and voicing of the training split (cached in the workdir) and reports, on
`data.eval_split`, its errors against harvest beside the hand-made estimator's
(pwavenet.audio.excitation).
"""

import ml_collections

try:  # a checkout: configs/ beside pwavenet/
    from configs import teacher
except ImportError:  # installed: the configs ship in the package as pwavenet.configs
    from pwavenet.configs import teacher


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    base = teacher.get_config(arg)
    c = ml_collections.ConfigDict()
    c.variant = base.variant
    c.seed = 0
    c.mel = base.mel
    c.data = base.data
    c.pitch = ml_collections.ConfigDict()
    c.pitch.channels = 64
    c.pitch.dilations = (1, 2, 4, 8, 1)  # a residual block each; context: their sum either side
    c.pitch.num_speakers = base.model.num_speakers  # > 0: a speaker embedding
    c.pitch.speaker_dim = 16
    c.pitch.steps = 3000
    c.pitch.batch_size = 16
    c.pitch.crop_frames = 64
    c.pitch.learning_rate = 2e-3
    c.pitch.train_utterances = 0  # the first this many of the training split; 0: all
    c.pitch.eval_utterances = 0  # the first this many of data.eval_split; 0: all
    if c.variant == "tiny":
        c.pitch.channels = 16
        c.pitch.dilations = (1, 2)
        c.pitch.steps = 20
        c.pitch.batch_size = 4
        c.pitch.crop_frames = 16
        c.pitch.train_utterances = 8
        c.pitch.eval_utterances = 2
    return c
