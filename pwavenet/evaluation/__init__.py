"""Evaluation's parts: the quality measures and the Griffin-Lim baseline (`quality`), the quality
table over a split (`tables`), the listening set's audio, distances and images (`listening`),
the models' likelihoods of audio and the distillation terms (`densities`), generation speed
(`speed`) and the reports (`report`). The names of `tables`, `listening`, `densities` and
`speed` are re-exported here; the job that restores a checkpoint and calls them is
`pwavenet.jobs.evaluate`."""

from pwavenet.evaluation.densities import *  # noqa: F401,F403
from pwavenet.evaluation.listening import *  # noqa: F401,F403
from pwavenet.evaluation.speed import *  # noqa: F401,F403
from pwavenet.evaluation.tables import *  # noqa: F401,F403
from pwavenet.evaluation.report import saved_report, write_report  # noqa: F401
