"""AudioRWKV: audio tagging with a bidirectional Eagle/Finch encoder over fbank patches.

Modules (one job each):
    io          audio files → mono 16 kHz waveforms, crop/pad
    fbank       Kaldi-compatible batched log-mel fbank (+ torchaudio reference)
    features    fbank → fixed frames → AST normalisation; FeatureStats
    stats       fbank mean/std over a dataset (`rwkv-mm audio stats`)
    augment     SpecAugment, mixup
    datasets    AudioSet CSVs / AST manifests, bad-clip reports
    sampler     balanced sampling weights and draws
    metrics     mAP, AUC, d'
    encoder     Q-Shift, patch embedding, bidirectional blocks
    model       AudioRWKV, T/S presets, parameter report
    checkpoint  tagger checkpoints, weight averaging
    tagger      tagging files
    synth       the synthetic sound-event set
    config      recipe sections (data, features, eval)
    cli         `rwkv-mm audio …` (add_commands)
    modality    the declaration: CLI group, quickstart part (rwkv_mm.modalities)
"""
