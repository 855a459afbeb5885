"""The SavedModel tests need TensorFlow (the `tf` extra); without it each module skips, saying so
(`pytest.importorskip(*NEEDS_TF)`)."""

import pytest

NEEDS_TF = ("tensorflow", None, "TensorFlow is not installed (pip install 'fibergrid[tf]')")


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory):
    """saved_model(builder_name) -> the directory of that model from tests/savedmodel/models.py,
    saved once per session."""
    from tests.savedmodel import models

    paths: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in paths:
            paths[name] = models.save(getattr(models, name), str(tmp_path_factory.mktemp("savedmodel") / name))
        return paths[name]

    return get
