"""Eagle (RWKV-5) and Finch (RWKV-6) language-model backbone (installed as rwkv_mm.backbone)."""
