"""Fine-tune F5-TTS / E2-TTS into run folders whose frozen manifest defines the model."""
