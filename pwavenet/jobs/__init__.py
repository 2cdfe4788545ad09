"""The jobs, each a function testable without absl: `teacher` and `student` training,
`evaluate`, `synthesize`, `export` and the pitch predictor's fit (`pitch`), with `mel_stats`,
the normalization statistics a training job finds or computes. The absl entry points in
launch/ only parse flags and call these (the flows' job is `pwavenet.flows.fitting`; the speed
benchmark lives in benchmarks/)."""
