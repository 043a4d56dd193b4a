"""`kinema bench`: generation latency and memory per stage, denoiser throughput and MFU, training
samples/s, and our models against diffusers' matched Wan models (docs/BENCHMARKS.md)."""
from .stages import BenchSettings, format_result, run_bench, write_result

__all__ = ["BenchSettings", "format_result", "run_bench", "write_result"]
