"""Job configs (ml_collections), one module per job: `teacher`, `student`, `flows`. Each has
`get_config(variant)`; jobs take them as `--config=configs/<file>.py:<variant>`, and code that
needs a layout imports them (`from configs import teacher`) rather than restating it."""
