"""Upstream f5-tts's inference path with a local checkpoint and a local vocoder, as its infer_cli runs it.

One step cannot run on a machine without FFmpeg: preprocess_ref_audio_text (pydub) and
torchaudio.load. The reference clip is read with soundfile instead; everything else (imports,
load_vocoder, load_model/load_checkpoint, infer_batch_process with CFM.sample and the vocoder) is
upstream's own code. Usage: upstream_infer.py CKPT VOCAB VOCOS_DIR REF_WAV REF_TEXT GEN_TEXT OUT NFE ARCH_JSON
"""
import json
import sys


def main(ckpt, vocab, vocos_dir, ref_wav, ref_text, gen_text, out, nfe, arch_json):
    import soundfile as sf
    import torch
    from f5_tts.infer.utils_infer import infer_batch_process, load_model, load_vocoder
    from f5_tts.model import DiT

    vocoder = load_vocoder("vocos", is_local=True, local_path=vocos_dir, device="cpu")
    model = load_model(DiT, json.loads(arch_json), ckpt, mel_spec_type="vocos", vocab_file=vocab, device="cpu")
    samples, sr = sf.read(ref_wav, dtype="float32", always_2d=True)
    audio = torch.from_numpy(samples.T.copy())
    wav, sr, _ = next(infer_batch_process((audio, sr), ref_text, [gen_text], model, vocoder, nfe_step=int(nfe),
                                          device="cpu"))
    sf.write(out, wav, sr)


if __name__ == "__main__":
    main(*sys.argv[1:10])
