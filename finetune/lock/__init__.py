"""The lock: manifest, the one model builder, checkpoints (ours and upstream's layouts), diagnosis, vocab,
audio, vocoder and loading. Training (finetune/) and inference (infer/) both stand on it; it imports
neither (tests/test_imports.py checks)."""
