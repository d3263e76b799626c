"""omnidlm: diffusion language models and unified omni diffusion models (the LLaDA family)."""

from .config import ModelConfig, preset
from .formats import convert, load, save

__all__ = ["ModelConfig", "preset", "load", "save", "convert"]
__version__ = "0.1.0"
