"""Layers shared by model families (timm's ``layers`` package in spirit)."""

from reidbench.models.layers.attention import (
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

__all__ = [
    "ATTENTIONS", "BottleneckAttention", "ChannelGate", "ChannelMLP", "ChannelWiseAttention", "Conv1x1",
    "Conv1x1Linear", "ConvLayer", "CrossAttention", "Exchange", "LightConv3x3", "PairIdentity", "PooledECA",
    "SEAttention", "SpatialAttention", "SpatialBranch", "SpatialGroupEnhance", "build_attention",
    "init_osnet_style",
]
