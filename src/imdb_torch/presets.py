"""The Keras lesson's four experiments, as named model settings."""

from __future__ import annotations

MODEL_DEFAULTS = {
    "arch": "lstm",
    "embedding_dim": 16,
    "hidden_size": 8,
    "num_layers": 1,
    "dropout": 0.0,
}

PRESETS: dict[str, dict] = {
    "lstm": {"arch": "lstm"},  # LSTM(8)
    "lstm-dropout": {"arch": "lstm", "dropout": 0.3},  # LSTM(8, dropout=0.3)
    "lstm-2layer": {"arch": "lstm", "num_layers": 2, "dropout": 0.3},  # two stacked of those
    "gru": {"arch": "gru"},  # GRU(8)
}


def model_settings(preset: str | None, overrides: dict) -> dict:
    """Defaults, then the preset, then every override that is not ``None``."""
    settings = dict(MODEL_DEFAULTS)
    if preset is not None:
        settings.update(PRESETS[preset])
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings


def experiment_name(settings: dict) -> str:
    """The preset's name when the settings are exactly a preset's, else a descriptive one."""
    for name in PRESETS:
        if model_settings(name, {}) == settings:
            return name
    return "{arch}-{num_layers}x{hidden_size}-emb{embedding_dim}-dropout{dropout:g}".format(
        **settings
    )
