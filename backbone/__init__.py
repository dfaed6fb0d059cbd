"""Eagle (RWKV-5), Finch (RWKV-6), Goose (RWKV-7) and GoldFinch language-model backbones
(installed as rwkv_mm.backbone). Everything above the backbone imports these names from here,
never from its modules.

Layout: the Eagle/Finch core (config, time_mix, channel_mix, model, state, init, linear) reads
top to bottom; each further family is a subpackage beside it (goose/, goldfinch/); build,
encoder and checkpoint are where the families meet.

Public API:
  models
    RWKVConfig                    the shapes and options of every family (one dataclass)
    config_from_dict              any config dataclass from a nested dict, strictly (dotted keys)
    config_to_dict                a config dataclass as plain dicts/lists/scalars
    ConfigDictError               an unknown, missing or mistyped key (a UserError)
    normalize_version             "Finch", "x070", ... -> "5" / "6" / "7" / "goldfinch" (ConfigError else)
    VERSION_ALIASES               every accepted spelling of a version -> its canonical name
    RWKV, RWKVState               Eagle/Finch language model and its recurrent state (Goose's too)
    Goose                         the RWKV-7 (x070) language model (state: RWKVState)
    GoldFinch, GoldFinchState     the GoldFinch hybrid and its state + compressed key cache
    Backbone, BackboneState       type of any family's language model / state
    build_backbone                a fresh language model of config.version's family
    LayerOrder                    per-layer sequence order a forward pass may take (VisualRWKV-6)
  front ends
    RWKVEncoder                   base of bidirectional encoders: L blocks of any family, run for you
    TokenShift                    an encoder's replacement of the token shift (e.g. Q-Shift)
  weights
    load_model, save_model        official BlinkDL .pth (v5, v6, x070) / GoldFinch / .safetensors files
    read_state_dict               the tensors of a .pth or .safetensors file (memory-mapped)
    state_dict_to_model           a checked model from an official-layout state dict
    config_from_state_dict        the RWKVConfig a state dict's keys and shapes imply
    detect_version                "7", "6", "5.2", ... or "goldfinch" from a state dict's keys
    torch_load                    torch.load that never runs code from the file
    check_weights                 every tensor dense, floating-point and finite
    check_state_dict              a state dict's keys and shapes against a model's
    layer_count                   L from contiguous `blocks.<i>.` keys
    CheckpointError               an unloadable checkpoint (a UserError naming file and key)
    UnsupportedVersionError       a checkpoint of RWKV-4 or of RWKV-7's DeepEmbed variant
  state tuning (a learned initial state, `blocks.{i}.att.time_state`; Eagle/Finch)
    add_initial_state             give a model a trainable initial state (zeros; + token shifts)
    has_initial_state             whether a model holds one
    initial_state                 the state a fresh sequence starts from, as an RWKVState
    initial_state_params          {state-dict key: parameter} of the learned state
    tuned_state_dict              its tensors in the file layout (RWKV-PEFT / BlinkDL's runtime)
    save_tuned_state, load_tuned_state, apply_tuned_state   a state.pth alone, into any same-shape model
  training
    param_groups, make_optimizer  the paper's AdamW groups (App. H)
    GradCheckpointing             mixin of a module whose block loop can recompute activations
    run_block                     run one block, checkpointed (recomputed in backward) when enabled
    set_grad_checkpointing        switch it in every part of a model that has it (train.grad_cp)
  tokenizers
    Tokenizer                     what every tokenizer provides (a Protocol)
    WorldTokenizer                the RWKV World tokenizer
    load_tokenizer                a tokenizer by registered name ("world", ...)
    register_tokenizer            add a named tokenizer factory (e.g. a modality's own)
    available_tokenizers          the registered names
    StreamDecoder                 token ids -> text as it becomes valid UTF-8
  sampling and generation
    SamplingConfig, sample_logits temperature / top-p / top-k / penalties, one draw
    Sampler                       sampling with repetition penalties over a generation
    NonFiniteLogitsError          NaN/inf logits met while sampling
    generate_text, generate_tokens, prefill   recurrent generation from a prompt
    to_decode_layout              column-major weights for fast CPU decoding
  files and errors
    atomic_write                  write a file through a temp file + rename
    temp_files_of, TEMP_SUFFIX    the temp files atomic_write may leave after a kill
    current_umask                 the process umask
    UserError, ConfigError        a user's mistake (ConfigError: a config field)
    DiskFullError, is_disk_full   a full disk, and telling one from other OSErrors
    check_int, check_float, check_choice   field checks for config dataclasses
"""

from .build import Backbone, BackboneState, build_backbone
from .checkpoint import (UnsupportedVersionError, check_state_dict, config_from_state_dict,
                         detect_version, load_model, save_model, state_dict_to_model)
from .checkpointing import GradCheckpointing, run_block, set_grad_checkpointing
from .config import VERSION_ALIASES, RWKVConfig, normalize_version
from .config_dict import ConfigDictError, config_from_dict, config_to_dict
from .encoder import RWKVEncoder
from .encoder_block import TokenShift
from .errors import (ConfigError, DiskFullError, UserError, check_choice, check_float, check_int,
                     is_disk_full)
from .files import TEMP_SUFFIX, atomic_write, current_umask, temp_files_of
from .generate import generate_text, generate_tokens, prefill
from .goldfinch import GoldFinch, GoldFinchState
from .goose import Goose
from .initial_state import add_initial_state, has_initial_state, initial_state_params
from .linear import to_decode_layout
from .model import RWKV, LayerOrder
from .optim import make_optimizer, param_groups
from .sampling import NonFiniteLogitsError, Sampler, SamplingConfig, sample_logits
from .state import RWKVState
from .tokenizer import (StreamDecoder, Tokenizer, WorldTokenizer, available_tokenizers, load_tokenizer,
                        register_tokenizer)
from .tuned_state import apply_tuned_state, initial_state, load_tuned_state, save_tuned_state, tuned_state_dict
from .weights import CheckpointError, check_weights, layer_count, read_state_dict, torch_load

__all__ = [
    # models
    "RWKVConfig", "config_from_dict", "config_to_dict", "ConfigDictError", "normalize_version",
    "VERSION_ALIASES", "RWKV", "RWKVState", "Goose", "GoldFinch",
    "GoldFinchState", "Backbone", "BackboneState", "build_backbone", "LayerOrder",
    # front ends
    "RWKVEncoder", "TokenShift",
    # weights
    "load_model", "save_model", "read_state_dict", "state_dict_to_model", "config_from_state_dict",
    "detect_version", "torch_load", "check_weights", "check_state_dict", "layer_count",
    "CheckpointError", "UnsupportedVersionError",
    # state tuning
    "add_initial_state", "has_initial_state", "initial_state", "initial_state_params", "tuned_state_dict",
    "save_tuned_state", "load_tuned_state", "apply_tuned_state",
    # training
    "param_groups", "make_optimizer", "GradCheckpointing", "run_block", "set_grad_checkpointing",
    # tokenizers
    "Tokenizer", "WorldTokenizer", "load_tokenizer", "register_tokenizer", "available_tokenizers",
    "StreamDecoder",
    # sampling and generation
    "SamplingConfig", "sample_logits", "Sampler", "NonFiniteLogitsError", "generate_text",
    "generate_tokens", "prefill", "to_decode_layout",
    # files and errors
    "atomic_write", "temp_files_of", "TEMP_SUFFIX", "current_umask", "UserError", "ConfigError",
    "DiskFullError", "is_disk_full", "check_int", "check_float", "check_choice",
]
