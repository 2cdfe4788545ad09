"""The models: causal layers and the conditioning upsampler (`layers`), per-sample output
distributions (`distributions`), the WaveNet teacher and its cached autoregressive sampler
(`wavenet`), the IAF student and its parallel, windowed and chunked synthesis (`iaf`), both
built from a job config (`builders`), the teacher's training loss (`losses`) and the learned
pitch predictor (`pitch`)."""
