"""The shared training loop and what it is made of: the train state and optimizer (`state`),
pmapped train and eval steps (`steps`), a workdir's config and checkpoints (`checkpoints`), a
model as one file (`bundle`), preemption (`preemption`), one job per workdir (`lock`),
TensorBoard summaries (`summaries`), timing (`timing`) and the loop itself (`loop`). Their
public names are re-exported here: `training.fit(config, workdir, job)`."""

from pwavenet.training.bundle import *  # noqa: F401,F403
from pwavenet.training.checkpoints import *  # noqa: F401,F403
from pwavenet.training.loop import *  # noqa: F401,F403
from pwavenet.training.preemption import *  # noqa: F401,F403
from pwavenet.training.state import *  # noqa: F401,F403
from pwavenet.training.steps import *  # noqa: F401,F403
from pwavenet.training.summaries import *  # noqa: F401,F403
from pwavenet.training.timing import *  # noqa: F401,F403
from pwavenet.training.lock import *  # noqa: F401,F403
