"""LLM engines: one interface (base.Engine), several backends, one continuous-batching scheduler."""

from luodi.engines.base import Engine, GenerationChunk, SamplingParams

__all__ = ["Engine", "GenerationChunk", "SamplingParams"]
