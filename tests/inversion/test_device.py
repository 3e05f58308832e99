"""``inversion.device.torch_threads``: the process-wide thread count is set for a block and always given back."""

from __future__ import annotations

import pytest
import torch

from inversion.device import torch_threads
from inversion.errors import ConfigError


def test_the_count_is_set_inside_and_restored_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_a_count_below_one_is_refused_and_changes_nothing():
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match="at least 1"), torch_threads(0):
        pass
    assert torch.get_num_threads() == before
