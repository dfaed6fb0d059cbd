"""WKV operators: the public op, its chunked PyTorch form, the decode step and the fp32 reference.

Installed as ``rwkv_mm.kernels`` (sources live in the top-level ``cuda/`` folder).
"""
