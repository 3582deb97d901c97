"""ORDER_RESEND_WINDOW_S: below the lookup grace, so a re-sent order is looked up before it is
given up; left unset it follows a short grace instead of refusing to start."""

from __future__ import annotations

import pytest

from config import load_settings
from errors import ConfigError


def test_resend_window_default_is_20s_below_default_grace() -> None:
    s = load_settings(env_file=None)
    assert s.resend_window_s == 20.0 < s.order_lookup_grace_s


def test_resend_window_unset_with_short_grace_is_half_the_grace() -> None:
    s = load_settings(env_file=None, order_lookup_grace_s=2.0)
    assert s.resend_window_s == 1.0


def test_resend_window_set_at_or_above_grace_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env_file=None, order_lookup_grace_s=10.0, order_resend_window_s=10.0)
    assert e.value.problems == ["ORDER_RESEND_WINDOW_S: must be less than ORDER_LOOKUP_GRACE_S"]


def test_resend_window_zero_turns_resending_off() -> None:
    s = load_settings(env_file=None, order_resend_window_s=0)
    assert s.resend_window_s == 0.0
