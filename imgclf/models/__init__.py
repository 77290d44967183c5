"""Model zoo: every architecture registers itself by name in `registry`."""

from imgclf.models.registry import available_models, build_model, register

__all__ = ["available_models", "build_model", "register"]
