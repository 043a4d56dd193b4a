"""Generation pipelines with the diffusers call shape."""
from .pipeline import KinemaPipeline, KinemaPipelineOutput, PipelineDefaults, export_to_video

__all__ = ["KinemaPipeline", "KinemaPipelineOutput", "PipelineDefaults", "export_to_video"]
