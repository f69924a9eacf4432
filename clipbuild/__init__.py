"""clipbuild: hardened, multi-level OS images built the CLIP OS 4 way, with today's tools."""

__version__ = "0.1.0"
