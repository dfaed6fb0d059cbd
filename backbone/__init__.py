"""Eagle (RWKV-5), Finch (RWKV-6) and GoldFinch language-model backbones (installed as
rwkv_mm.backbone).

Public API:
    RWKVConfig, RWKV, RWKVState          — the model and its recurrent state
    GoldFinch, GoldFinchState            — the GoldFinch hybrid and its state + key cache
    build_backbone                       — RWKV or GoldFinch, from config.version
    load_model, save_model               — official BlinkDL .pth / .safetensors weights
    param_groups, make_optimizer         — the paper's AdamW groups (App. H)
    WorldTokenizer, load_tokenizer       — the RWKV World tokenizer
    SamplingConfig, generate_text, ...   — sampling and recurrent generation
    to_decode_layout                     — column-major weights for fast CPU decoding
"""

from .checkpoint import (CheckpointError, UnsupportedVersionError, config_from_state_dict,
                         detect_version, load_model, read_state_dict, save_model, state_dict_to_model)
from .build import build_backbone
from .config import RWKVConfig
from .goldfinch import GoldFinch
from .goldfinch_state import GoldFinchState
from .generate import generate_text, generate_tokens, prefill
from .linear import to_decode_layout
from .model import RWKV
from .optim import make_optimizer, param_groups
from .sampling import SamplingConfig, sample_logits
from .state import RWKVState
from .tokenizer import WorldTokenizer, load_tokenizer

__all__ = [
    "RWKVConfig", "RWKV", "RWKVState", "GoldFinch", "GoldFinchState", "build_backbone",
    "load_model", "save_model", "read_state_dict",
    "state_dict_to_model", "config_from_state_dict", "detect_version", "CheckpointError",
    "UnsupportedVersionError", "param_groups", "make_optimizer", "WorldTokenizer", "load_tokenizer",
    "SamplingConfig", "sample_logits", "generate_text", "generate_tokens", "prefill",
    "to_decode_layout",
]
