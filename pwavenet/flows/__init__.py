"""The normalizing-flow toolkit: affine, elementwise sigmoid and planar layers, chains and flows
(`bijectors`, re-exported here as `pwavenet.flows.Affine` etc.), the 2-D problems they are
tested on (`toy2d`) and the job that fits them on the shared trainer (`fitting`)."""

from pwavenet.flows.bijectors import *  # noqa: F401,F403
