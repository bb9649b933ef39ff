import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own preprocessing cache; nothing leaks into ~/.cache."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(2)
