"""A Whisper with random weights and a byte-level tokenizer of 266 tokens, saved like a hub model folder.

It goes through the same loading and pipeline code as openai/whisper-large-v3-turbo. Its generation
config suppresses the end token, control bytes and non-ASCII bytes, so every clip comes out as
`max_length` - 4 printable characters of gibberish: the path is real, the text is not.
"""
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def write_tiny_whisper(folder, max_length: int = 16, seed: int = 0) -> Path:
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = Path(folder)
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
    ids = {s: vocab[s] for s in SPECIALS}
    end = ids["<|endoftext|>"]
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=64, pad_token_id=end, bos_token_id=end,
                           eos_token_id=end, decoder_start_token_id=ids["<|startoftranscript|>"],
                           suppress_tokens=None, begin_suppress_tokens=None)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    printable = {vocab[byte_chars[b]] for b in range(32, 127)}
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=end, pad_token_id=end, max_length=max_length,
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        suppress_tokens=[i for i in range(len(vocab)) if i not in printable], begin_suppress_tokens=[])
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder
