"""The models: causal layers and the conditioning upsampler (`layers`), the dilated causal
stack both networks are built on (`stack`), what they share in front of it (`conditioning`),
per-sample output distributions (`distributions`), the WaveNet teacher (`wavenet`) and its
cached generation (`generation`), the IAF student and its synthesis (`iaf`), the synthesis
contract both follow (`synthesis`), device placement for synthesis loops (`placement`), both
built from a job config (`builders`), the teacher's training loss (`losses`) and the learned
pitch predictor (`pitch`)."""
