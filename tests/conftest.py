"""Test-wide set-up that must happen before jax is imported anywhere.

Eight fake CPU devices let the pmap code paths run as they do on an 8-chip host.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_UNDER_XDIST = "PYTEST_XDIST_WORKER" in os.environ  # this process is a pytest-xdist worker
# The jobs' XLA:CPU options (512-bit vectors on an AVX-512 CPU), so that the tests compile the
# code as the jobs they start do.
from launch import common  # noqa: E402

common.prefer_wide_vectors()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent compilation cache for this test session, inherited by the training processes
# the job tests start: the same tiny models compile once instead of in every test and process.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _OWN_CACHE = tempfile.mkdtemp(prefix="pwavenet-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"


import shutil  # noqa: E402  (after the environment set-up above)

import pytest  # noqa: E402
from ci_policy import pytest_runtest_makereport  # noqa: E402, F401  (a hook: CI runs every test)
from ci_policy import under_ci  # noqa: E402

ESPEAK_NG_MISSING = (
    "espeak-ng is not installed; the job tests need it to build the embedded corpus "
    "(Debian/Ubuntu: sudo apt-get install espeak-ng; macOS: brew install espeak-ng)"
)


@pytest.fixture(scope="session")
def espeak_small_data_dir(tmp_path_factory):
    """A tfds data_dir for configs' tiny variants (data.name 'espeak_corpus/small'), shared
    by the tests that train on it: the first job to read it builds the corpus (under the
    builder lookup's file lock, pwavenet.data.lookup), the others reuse it. Tests of building
    itself use their own."""
    if shutil.which("espeak-ng") is None:
        if under_ci():
            pytest.fail(ESPEAK_NG_MISSING, pytrace=False)
        pytest.skip(ESPEAK_NG_MISSING)
    root = tmp_path_factory.getbasetemp()
    if _UNDER_XDIST:
        root = root.parent  # the workers' common folder: one corpus for all of them
    path = root / "tfds_espeak_small"
    path.mkdir(exist_ok=True)
    return str(path)


# The job tests whose work is separate training processes (tests/background.py).
_BACKGROUND_MODULES = ("test_multihost.py", "test_preemption.py")


@pytest.fixture(scope="session", autouse=True)
def _start_slow_jobs_early(request, tmp_path_factory):
    """The job tests whose work is separate training processes (tests/background.py): when
    their tests are selected, their processes start with the session's first test and run
    beside the others; each module waits for its own and checks them as before. Not under
    pytest-xdist (the default, one worker per core): there the other workers' tests fill the
    cores while a module waits for its processes, and a worker cannot know which modules it
    will be given."""
    import importlib

    import background

    selected = {item.path.name for item in request.session.items}
    jobs = request.config.stash[background.EARLY] = {}
    if shutil.which("espeak-ng") is not None and not _UNDER_XDIST:
        for name in _BACKGROUND_MODULES:
            if name in selected:
                module = importlib.import_module(name[: -len(".py")])
                data_dir = request.getfixturevalue("espeak_small_data_dir")
                jobs[name] = module.start_early(tmp_path_factory, data_dir)
    yield
    for job in jobs.values():  # any that no test waited for
        job.kill()


# Under pytest-xdist, the modules that wait longest on processes of their own (about 3 and 1
# minutes on 2 cores, and the end-to-end jobs' 4) first: the workers collect, and are handed
# files, in this order, so these start on the first workers and the shorter files fill the
# other cores around them, rather than one of them starting last and running alone. In one
# process the early start above overlaps the first two with the other tests instead, and the
# order stays as collected.
_LONG_MODULES = (*_BACKGROUND_MODULES, "test_jobs_end_to_end.py")


def pytest_collection_modifyitems(session, config, items):
    if _UNDER_XDIST:
        items.sort(key=lambda item: item.path.name not in _LONG_MODULES)  # stable


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
