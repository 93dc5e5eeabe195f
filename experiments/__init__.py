"""The paper's experiments, run from the repository root as modules: ``python -m experiments.compare``
(also fewshot, latent2d, scaling, bench). ``runner`` holds what the scripts share."""
