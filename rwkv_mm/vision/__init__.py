"""VisualRWKV: a frozen CLIP vision tower + projector whose embeddings replace `<image>` in the
token stream of an Eagle/Finch language model (paper §10.2).

Modules: `tower` (CLIP through open_clip or transformers), `projector`, `model` (the fusion
model), `conversation` (chat template and loss mask), `data` (LLaVA JSON), `checkpoint`
(our files and released VisualRWKV checkpoints), `chat` (inference), `synth` (the synthetic
shapes dataset the tests and the quickstart use), `cli` (`rwkv-mm vision chat|eval`) and
`modality` (the declaration: CLI group, quickstart parts; see `rwkv_mm.modalities`).
"""
