"""omnidlm: diffusion language models and unified omni diffusion models (the LLaDA family).

    import omnidlm
    model = omnidlm.load("models/text-tiny")                 # any layout: text, LLaDA-V, LLaDA-o, Uni, or a Hub id
    results = omnidlm.generate(model, [prompt_ids])          # the batched engine (sampling/engine.py)
    score = omnidlm.loglikelihood(model, prompt_ids, answer_ids)  # Monte Carlo ELBO (eval/likelihood.py)
"""

from .config import ModelConfig, preset
from .eval.likelihood import loglikelihood
from .formats import convert
from .sampling.engine import generate
from .systems import load, save

__all__ = ["ModelConfig", "preset", "load", "save", "convert", "generate", "loglikelihood"]
__version__ = "0.1.0"
