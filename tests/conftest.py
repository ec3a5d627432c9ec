"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules of small batches: they gain nothing from two, and when the 2 cores are
    shared with other jobs OpenMP's barrier waits make small convolutions many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
