"""rwkv_mm: multimodal Eagle (RWKV-5) and Finch (RWKV-6).

Subpackages: ``rwkv_mm.backbone`` (the language model, installed from ``backbone/``) and
``rwkv_mm.kernels`` (the WKV operator and its implementations, installed from ``cuda/``).
"""

__version__ = "0.1.0"
