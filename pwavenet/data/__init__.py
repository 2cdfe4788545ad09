"""Data: tf.data pipelines from utterances to (audio, mel, speaker) batches per host
(`input_pipeline`) and the tfds builders of the embedded corpus and of wav folders
(`builders`). Importing this package imports TensorFlow."""
