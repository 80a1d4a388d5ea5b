"""What training, inference, scoring and the app share that is not the lock: audio, the vocoder, the recogniser
and speaker models, reading datasets, validation loss, scores and the record of how speech was sampled.
Imports only the lock (tests/test_imports.py holds it)."""
