"""The jobs, each a function testable without absl: `teacher` and `student` training,
`evaluate`, `synthesize`, `export` and `benchmark`. The absl entry points in launch/ only parse
flags and call these."""
