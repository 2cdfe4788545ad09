"""Process set-up shared by every job's entry point, and its command-line errors.

`run(main)` starts an entry point: a bad flag, config file, config field or argument, and a
ValueError or FileNotFoundError the library raises for the job's inputs, end the process with
one line on stderr, `error: <the problem and its fix>`, and exit status 2 (`-v 1` shows the
library's traceback instead); so does an OSError (a full disk, a read-only folder, a workdir
another training job holds), whose message names the path. Flags and config files are checked
before the job imports TensorFlow or JAX, and so are the checks an entry point makes with
`require_dir`: every field of a loaded config against its type and range
(pwavenet.config_schema), e.g. `error: --config.train.steps=-5: expected an integer >= 1
(training steps).`

The console carries the project's own lines (what runs, progress, evaluations, saves, where
results went) and every warning and error. The libraries' INFO lines (orbax, tensorflow_datasets,
JAX, TensorFlow's start-up notices) stay off it unless `-v 1` (`--verbosity=1`) asks for them;
`--log_dir=DIR` also writes the whole log, their INFO lines included, to a file in DIR.
"""

import importlib.util
import logging as python_logging
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() with the cluster's auto-detected "
    "settings (Cloud TPU pod slices, SLURM, ...).",
)
flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for an explicit multi-process launch."
)
flags.DEFINE_integer("num_processes", None, "Number of processes (explicit launches).")
flags.DEFINE_integer("process_id", None, "This process's index (explicit launches).")
flags.DEFINE_integer(
    "cpu_devices",
    None,
    "Devices the CPU backend exposes (0: one per core this process may use; unset: JAX's "
    "default, one). Jobs spread their work over the local devices as on an accelerator "
    "host: data-parallel training and batched generation. The benchmark's default is 0.",
)
flags.register_validator(
    "cpu_devices",
    lambda count: count is None or count >= 0,
    "use a count >= 1, or 0 for one per core.",
)

# Exit status of a command-line error (argparse's and absl's usage errors use 2 as well).
USAGE_ERROR = 2


def fail(message: str) -> None:
    """Prints `error: <message>` as one line on stderr and exits with status 2."""
    one_line = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {one_line}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _config_file_problem(flag_name: str, argv: list[str], error: Exception) -> str:
    """The one-line reason a config file flag could not give its config."""
    text = str(error)
    given = next((a for a in argv if a.startswith(f"--{flag_name}=")), f"--{flag_name}")
    missing = re.search(r"No such file or directory: '([^']*)'", text)
    if missing:
        return (
            f"{given}: no such config file {missing.group(1)!r} in {os.getcwd()}; pass an "
            "existing file (one of configs/ from the repository root, or an absolute path) or a "
            "shipped config's name: teacher, student or flows."
        )
    # The config's own error (an unknown variant, ...) is the traceback's last line.
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    return f"{given}: {re.sub(r'^[A-Za-z]*Error: ', '', last)}"


def _unknown_field_problem(argv: list[str], error: AttributeError) -> str:
    """An override of a config field that does not exist (ml_collections' AttributeError)."""
    text = str(error)
    field = re.match(r"[\\'\"]*([A-Za-z0-9_]+)", text)
    name = field.group(1) if field else ""
    overrides = [a.split("=")[0] for a in argv if a.startswith("--") and "." in a.split("=")[0]]
    given = next((a for a in overrides if name in a.split(".")), "a --config.<field> override")
    hint = re.search(r'Did you mean \\?"([^"\\]+)', text)
    fix = f"did you mean {hint.group(1)!r}?" if hint else "check the name in the config file."
    return f"{given}: the config has no field {name!r}; {fix}"


_CONFIG_FLAGS = {}  # flag name -> the config kind (pwavenet.config_schema.KINDS) it takes
_CONFIG_FILES = {
    "teacher": "configs/teacher.py",
    "student": "configs/student.py",
    "flows": "configs/flows.py",
    "pitch": "configs/pitch.py",
}

# The shipped configs: configs/ beside launch/ in a checkout, pwavenet/configs beside
# pwavenet/cli once installed.
SHIPPED_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"
)


def shipped_config(value: str) -> str:
    """A config flag's value `file[:variant]`, unchanged when the file exists; else, when its
    name (teacher, student.py, configs/flows.py, ...) is one of the shipped configs, that
    config's file: an installed command takes `--config=teacher:tiny` from any directory."""
    path, colon, variant = value.partition(":")
    if os.path.exists(path):
        return value
    name = os.path.basename(path).removesuffix(".py")
    shipped = os.path.join(SHIPPED_CONFIGS, f"{name}.py")
    if name and not name.startswith("_") and os.path.isfile(shipped):
        return f"{shipped}{colon}{variant}"
    return value


def define_config_file(name: str, default: str, help_string: str, kind: str) -> None:
    """`config_flags.DEFINE_config_file` (locked) for an entry point, its errors through `fail`.
    ml_collections types the command line's `--<name>.<field>` overrides when the flag is
    defined, so an override of a field that does not exist fails here. `kind` ('teacher',
    'student' or 'flows') names the schema the loaded config is validated against."""
    try:
        config_flags.DEFINE_config_file(
            name, shipped_config(default), help_string, lock_config=True
        )
    except AttributeError as e:
        fail(_unknown_field_problem(sys.argv, e))
    _CONFIG_FLAGS[name] = kind


def check_config(flag_name: str, config, kind: str) -> None:
    """Fails with one line unless `config` is a `kind` config whose every field is in range
    (pwavenet.config_schema, which imports neither TensorFlow nor JAX)."""
    from pwavenet import config_schema

    given = config_schema.kind_of(config)
    if given != kind:
        fail(
            f"--{flag_name}: a {given} config ({_CONFIG_FILES[given]}), but this job takes a "
            f"{kind} config; pass --{flag_name}={_CONFIG_FILES[kind]}[:variant]."
        )
    try:
        config_schema.validate(config, kind, prefix=f"--{flag_name}.")
    except config_schema.ConfigError as e:
        fail(str(e))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every problem ending the process through `fail`: flags,
    config files (loaded here, not on first use), config fields, and stray arguments. A
    config flag may name a shipped config (`shipped_config`)."""
    prefixes = tuple(f"--{name}=" for name in _CONFIG_FLAGS)
    typed, argv = argv, [
        "=".join((a.split("=", 1)[0], shipped_config(a.split("=", 1)[1])))
        if a.startswith(prefixes)
        else a
        for a in argv
    ]
    try:
        rest = flags.FLAGS(argv)
        for name, kind in _CONFIG_FLAGS.items():
            try:
                flags.FLAGS[name].value.get("variant")  # a config that failed to load raises
            except OSError as e:
                fail(_config_file_problem(name, typed, e))
            _apply_mel_file(name)
            check_config(name, flags.FLAGS[name].value, kind)
    except AttributeError as e:
        fail(_unknown_field_problem(typed, e))
    except flags.Error as e:
        text = str(e)
        if "Error whilst parsing config file" in text:
            fail(_config_file_problem(text.split("=")[0].split("--")[-1], typed, e))
        fail(f"{text.rstrip('.')}. See --helpshort for the flags.")
    if len(rest) > 1:
        fail(
            f"unexpected arguments {rest[1:]}; flags take the form --name=value (see --helpshort)."
        )
    return rest


def _apply_mel_file(name: str) -> None:
    """--<name>.mel.from_file=PATH: the file's mel settings replace the config's
    (pwavenet.audio.mel_files; numpy and pyyaml only, no JAX or TensorFlow)."""
    from pwavenet import config_schema  # imports neither TensorFlow nor JAX

    config = flags.FLAGS[name].value
    if "mel" not in config or not config_schema.setting(config.mel, "mel.from_file"):
        return
    from pwavenet.audio import mel_files

    try:
        mel_files.apply_mel_file(config)
    except (ValueError, FileNotFoundError) as e:
        fail(f"--{name}.mel.from_file: {e}")


def require_dir(flag: str, path: str, fix: str) -> None:
    """Fails with `error: --flag=path ...; fix` unless `path` is an existing directory."""
    if not path:
        fail(f"{flag} is empty; {fix}")
    if not os.path.isdir(path):
        fail(f"{flag}={path}: no such directory; {fix}")


def run(main) -> None:
    """`absl.app.run(main)` with the command-line errors and the console of the module
    docstring."""

    def guarded(argv):
        try:
            configure_console()
            return main(argv)
        except (ValueError, OSError) as e:  # FileNotFoundError is an OSError
            if verbose():
                raise
            fail(e)

    app.run(guarded, flags_parser=parse_flags)


# ------------------------------------------------------------------------------ console


def _project_dirs() -> tuple[str, ...]:
    """The folders of the project's own code: launch/ and the pwavenet package (found without
    importing it, which would import JAX)."""
    dirs = {os.path.dirname(os.path.abspath(__file__))}
    spec = importlib.util.find_spec("pwavenet")
    if spec and spec.submodule_search_locations:
        dirs.update(os.path.abspath(d) for d in spec.submodule_search_locations)
    return tuple(os.path.join(d, "") for d in sorted(dirs))


class ProjectLinesAndWarnings(python_logging.Filter):
    """Passes the project's own log records and any library's warnings and errors.

    orbax and tensorflow_datasets log through absl's logger, as the project does, so the
    libraries' INFO lines cannot be told apart by logger name or level: they are told apart
    by the file that logged them."""

    def __init__(self, project_dirs: tuple[str, ...]):
        super().__init__()
        self._project_dirs = project_dirs

    def filter(self, record: python_logging.LogRecord) -> bool:
        if record.levelno >= python_logging.WARNING:
            return True
        return os.path.abspath(record.pathname).startswith(self._project_dirs)


class ConsoleFormatter(python_logging.Formatter):
    """The project's INFO lines as `HH:MM:SS message`; warnings and errors keep absl's prefix
    (level, date, time, thread, file:line), which says where they came from. A library's
    traceback is left out (its error's line stays; `-v 1` and `--log_dir` keep the traceback):
    orbax logs one per failed background save before the job names the failure itself."""

    def __init__(self, project_dirs: tuple[str, ...] = ()):
        super().__init__("%(asctime)s %(message)s", "%H:%M:%S")
        self._absl_format = logging.PythonFormatter()
        self._project_dirs = project_dirs

    def format(self, record: python_logging.LogRecord) -> str:
        if record.levelno >= python_logging.WARNING:
            if record.exc_info and not os.path.abspath(record.pathname).startswith(
                self._project_dirs or ("",)
            ):
                record = python_logging.makeLogRecord(
                    {**record.__dict__, "exc_info": None, "exc_text": None}
                )
            return self._absl_format.format(record)
        return super().format(record)


def verbose() -> bool:
    """Whether `-v 1` (`--verbosity=1` or more) asks for the libraries' INFO lines."""
    return flags.FLAGS.verbosity > 0


def _log_file_path(log_dir: str) -> str:
    """absl's log file name in `log_dir`: <program>.<host>.<user>.log.INFO.<time>.<pid>."""
    program = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    directory, prefix, _ = logging.find_log_dir_and_names(program, log_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(directory, f"{prefix}.INFO.{stamp}.{os.getpid()}")


def configure_console() -> None:
    """Keeps the libraries' INFO lines off the console (not under `-v 1`), and with
    `--log_dir` writes every line to a log file there. Runs once absl's handler is set up."""
    if not verbose():
        console = logging.get_absl_handler()
        console.addFilter(ProjectLinesAndWarnings(_project_dirs()))
        console.setFormatter(ConsoleFormatter(_project_dirs()))
    if flags.FLAGS.log_dir:
        path = _log_file_path(flags.FLAGS.log_dir)
        log_file = python_logging.FileHandler(path)
        log_file.setFormatter(logging.PythonFormatter())
        python_logging.getLogger().addHandler(log_file)
        logging.info("Full log: %s", path)


# The line absl's C++ logging prints once per library before its first log line, and the
# prefix of a C++ INFO line (I<month><day> ...).
_ABSL_CPP_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
_CPP_INFO_LINE = re.compile(r"I\d{4} ")


def library_info_line(line: str) -> bool:
    """Whether a line a C++ library wrote to stderr is INFO chatter: an `I....` line, or absl's
    notice that logging has not been initialized."""
    return bool(_CPP_INFO_LINE.match(line)) or line.startswith(_ABSL_CPP_NOTICE)


def _import_tensorflow():
    """`import tensorflow`, its C++ INFO lines (oneDNN's notice, twice) kept off the console.

    TensorFlow's libraries print them through absl's C++ logging straight to file descriptor 2,
    whatever TF_CPP_MIN_LOG_LEVEL says, so the descriptor is pointed at a file while importing,
    and every other line (warnings, errors) is written on afterwards."""
    if verbose():
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not library_info_line(line)))
            sys.stderr.flush()
    return tf


# ------------------------------------------------------------------------ process set-up


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU described by `cpuinfo` (Linux's /proc/cpuinfo format) runs AVX-512:
    the avx512f flag of its first `flags` line. False where the file cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


# XLA:CPU vectorizes its fused loops for 256-bit registers unless told otherwise; on the
# 2-core AVX-512 machines in BUILD.md, 512-bit code made training 1.15x to 1.20x as fast
# (AMD EPYC) and the student's synthesis 1.24x, and no scenario slower.
VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width=512"


def xla_flags_for_cpu(xla_flags: str, avx512: bool) -> str:
    """XLA_FLAGS with VECTOR_WIDTH_FLAG added on an AVX-512 CPU, unless they already set a
    vector width (XLA_FLAGS=--xla_cpu_prefer_vector_width=256 keeps XLA's default)."""
    if "xla_cpu_prefer_vector_width" in xla_flags or not avx512:
        return xla_flags
    return f"{xla_flags} {VECTOR_WIDTH_FLAG}".strip()


def prefer_wide_vectors(cpuinfo: str = "/proc/cpuinfo") -> None:
    """Sets XLA_FLAGS to `xla_flags_for_cpu` of this CPU. XLA reads XLA_FLAGS when JAX starts
    its first backend, so this runs before that."""
    current = os.environ.get("XLA_FLAGS", "")
    wanted = xla_flags_for_cpu(current, has_avx512(cpuinfo))
    if wanted != current:
        os.environ["XLA_FLAGS"] = wanted


def prepare_process() -> None:
    """Joins a multi-host run if asked, keeps TensorFlow (data and summaries only) off
    accelerators, lets XLA:CPU use 512-bit vectors where the CPU has them, and logs this
    process's place and devices. Runs before anything starts a JAX backend."""
    # TensorFlow's C++ INFO lines only under -v 1; its warnings and errors always.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "1")
    prefer_wide_vectors()
    try:
        tf = _import_tensorflow()
    except ImportError:
        pass  # jobs that read no data (the benchmark) run without TensorFlow
    else:
        tf.config.set_visible_devices([], "GPU")
    import jax

    f = flags.FLAGS
    if f.cpu_devices is not None:
        # Before any backend starts; it changes only the CPU backend.
        jax.config.update("jax_num_cpu_devices", f.cpu_devices or _usable_cores())
    if f.coordinator_address:
        jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    elif f.multihost:
        jax.distributed.initialize()
    logging.info(
        "JAX process %d of %d; local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
