"""Layers shared by model families (timm's ``layers`` package in spirit)."""

from reidbench.models.layers.attention import (
    ATTENTION_REGISTRY,
    ATTENTIONS,
    BottleneckAttention,
    ChannelMLP,
    ChannelWiseAttention,
    PooledECA,
    SEAttention,
    SpatialAttention,
    SpatialBranch,
    SpatialGroupEnhance,
    build_attention,
)
from reidbench.models.layers.blocks import (
    ChannelGate,
    Conv1x1,
    Conv1x1Linear,
    ConvLayer,
    CrossAttention,
    Exchange,
    LightConv3x3,
    PairIdentity,
    init_osnet_style,
)
from reidbench.models.layers.necks import BNNeck, TrunkWithBNNeck
from reidbench.models.layers.trunks import ResNetTrunk, resnet_trunk, trunk_pretrained_cfg

__all__ = [
    "ATTENTION_REGISTRY", "ATTENTIONS", "BNNeck", "TrunkWithBNNeck", "ResNetTrunk", "resnet_trunk",
    "trunk_pretrained_cfg",
    "BottleneckAttention", "ChannelGate", "ChannelMLP", "ChannelWiseAttention", "Conv1x1",
    "Conv1x1Linear", "ConvLayer", "CrossAttention", "Exchange", "LightConv3x3", "PairIdentity", "PooledECA",
    "SEAttention", "SpatialAttention", "SpatialBranch", "SpatialGroupEnhance", "build_attention",
    "init_osnet_style",
]
